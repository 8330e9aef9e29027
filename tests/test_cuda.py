"""The paper presets' training path on a GPU: deterministic mode on, fp32 and bf16, evaluate and predict on CUDA.

Skipped where CUDA is not available (the CPU machines this project is developed and tested on); run it on a GPU
machine with `pytest -q tests/test_cuda.py`. DDP over NCCL needs two or more GPUs.
"""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

from dgspnet.config import config_from_dict
from dgspnet.checkpoint import load_trained
from dgspnet.data import prepare_dataset
from dgspnet.evaluate import evaluate
from dgspnet.predict import predict_frames
from dgspnet.synthetic import make_synthetic_dataset
from dgspnet.train import run_pretrain, run_train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def paper_like(tmp, precision, **base):
    "The paper presets' settings that matter on a GPU (deterministic, widths 16..256, 2 tokens), on a tiny dataset."
    return config_from_dict({
        "base": {"device": "cuda", "deterministic": True, "precision": precision, "seed": 0, **base},
        "data": {"crop": 64, "source": str(tmp / "syn")},
        "model": {"widths": [16, 32, 64, 128, 256], "n_fine_tokens": 2, "clip_weights": "none"},
        "pretrain": {"epochs": 1, "batch_size": 4}, "train": {"epochs": 2, "batch_size": 4, "eval_every": 1}})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuda")
    make_synthetic_dataset(tmp / "syn", n_train=8, n_test=4, size=64)
    return tmp, prepare_dataset(tmp / "syn", tmp / "prep")


def run(tmp, manifest, precision, tag, **base):
    cfg = paper_like(tmp, precision, **base)
    enc = run_pretrain(cfg, manifest, tmp / f"pre_{tag}", tmp / f"ck_{tag}", tmp / f"live_pre_{tag}")
    return run_train(cfg, manifest, enc, tmp / f"train_{tag}", tmp / f"ck_{tag}", tmp / f"live_{tag}")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_deterministic_training_twice_same_weights(data, precision):
    "Deterministic mode raises on any op without a deterministic CUDA kernel; two runs give identical weights."
    if precision == "bf16" and not torch.cuda.is_bf16_supported(): pytest.skip("this GPU has no bf16")
    tmp, manifest = data
    a = torch.load(run(tmp, manifest, precision, f"{precision}_a"), weights_only=True)["state"]
    b = torch.load(run(tmp, manifest, precision, f"{precision}_b"), weights_only=True)["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())


@pytest.mark.parametrize("how", [{"channels_last": True}, {"compile": True}])
def test_channels_last_and_compile_on_cuda(data, how):
    "The throughput settings run both stages on CUDA in deterministic mode, with finite weights at the end."
    tmp, manifest = data
    state = torch.load(run(tmp, manifest, "auto", "_".join(how), **how), weights_only=True)["state"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_evaluate_and_predict_on_cuda(data):
    tmp, manifest = data
    model = run(tmp, manifest, "fp32", "eval")
    assert next(load_trained(model, "cuda").net.parameters()).is_cuda
    m = evaluate(model, manifest, tmp / "eval", device="cuda", progress=False)
    assert {"IoU_pct", "Pd_pct", "Fa_1e-6"} <= set(m)
    res = predict_frames(model, [tmp / "syn" / "images"], tmp / "pred", device="cuda")
    assert not res["failed"] and len(res["frames"]) == 12


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs 2 or more GPUs")
def test_ddp_nccl_two_gpus(data, tmp_path):
    "dgspnet_train under torchrun with 2 GPUs (NCCL) runs to the end."
    tmp, manifest = data
    p = paper_like(tmp, "fp32").to_dict(); p["base"]["nproc"] = 2; p["train"]["pretrained"] = False
    import yaml
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([str(BIN / "dgspnet_train"), "--params", "params.yaml", "--manifest", str(manifest),
                        "--pretrained", "none", "--out", "out", "--ckpt_dir", "ck", "--live_dir", "live"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "model.pt").exists()
