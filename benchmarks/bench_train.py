"""Training speed: time per optimizer step and images/s of pretraining and training, per precision and with the
throughput settings `base.channels_last` and `base.compile`, and the projected wall time of each `paper-*` preset
(800 + 800 epochs), on the device it runs on.

    python benchmarks/bench_train.py                      # CPU (2 threads) or the GPU when there is one
    python benchmarks/bench_train.py --device cpu --threads 2 --precisions fp32 bf16

Writes benchmarks/results/train_<device>.json with the machine. Crop 256, batch 4 (the paper's), random text tower
(same cost as CLIP's), synthetic batches; the median over `--steps` steps after `--warmup` steps (`first_step_s` is
the first step alone: with `compile`, the compilation). The model goes through `wrap_model`, as in training; the
throughput settings are measured on the full model at the first precision. The projection is
steps x epochs for both stages, plus the test passes every train.eval_every (50) epochs at the measured inference
time per image; dataset sizes are the published splits. This is a benchmark, not a test.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse, json, statistics, time
from pathlib import Path

import torch

from dgspnet.runtime import autocast_dtype, pick_device, set_threads
from dgspnet.config import config_from_dict
from dgspnet.checkpoint import build_model
from dgspnet.losses import PretrainLoss, SegmentationLoss
from dgspnet.model import DGSPNetPretrainer
from dgspnet.distributed import DistInfo, wrap_model
from dgspnet.train import _pretrain_step, _train_step
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"paper-nuaa-sirst": (213, 214, 256), "paper-nudt-sirst": (663, 664, 256), "paper-irstd-1k": (800, 201, 512)}
MODELS = {"DGSPNet": {}, "Table 2 baseline": {"tgca": False, "cross_attn": False, "tgsa": False}}
SETTINGS = {"channels_last": {"channels_last": True}, "compile": {"compile": True}}  # base.* throughput settings


def timed(fn, device, steps, warmup) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(model_kw, precision, device, steps, warmup, **how) -> dict:
    cfg = config_from_dict({"model": {"widths": [16, 32, 64, 128, 256], "clip_weights": "none", **model_kw}})
    amp = autocast_dtype(precision, device)
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(4, 1, 256, 256, generator=g).to(device),
        "mask": (torch.rand(4, 1, 256, 256, generator=g) > 0.999).float().to(device),
        "scene": [""] * 4,
    }
    out = {}
    for stage in ("pretrain", "train"):
        net = build_model(cfg)
        model = wrap_model(
            DGSPNetPretrainer(net) if stage == "pretrain" else net.freeze_inversion(), DistInfo(), device, **how
        )
        step = _pretrain_step(PretrainLoss()) if stage == "pretrain" else _train_step(SegmentationLoss())
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
        model.train()

        def one():
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = step(model, batch)["loss"]
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        first = timed(one, device, 1, 0)
        s = timed(one, device, steps, warmup)
        out[stage] = dict(step_s=round(s, 4), images_per_s=round(4 / s, 2), first_step_s=round(first, 2))
    net.eval()
    x = batch["image"][:1]
    with torch.no_grad():
        out["inference_s_per_image"] = round(timed(lambda: net(x), device, steps, warmup), 4)
    return out


def project(r: dict) -> dict:
    "Hours for each paper preset: 800 pretraining + 800 training epochs + 16 test passes (eval_every 50)."
    res = {}
    for name, (n_train, n_test, size) in SPLITS.items():
        per_epoch = n_train // 4
        scale = (size / 256) ** 2  # IRSTD-1K images are 512x512: test passes cost about 4x per image
        sec = (
            800 * per_epoch * (r["pretrain"]["step_s"] + r["train"]["step_s"])
            + 16 * n_test * r["inference_s_per_image"] * scale
        )
        res[name] = round(sec / 3600, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", nargs="*", default=None, help="default: fp32 and bf16 (+ fp16 on CUDA)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    device = pick_device(a.device)
    set_threads(a.threads)
    precisions = a.precisions or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    res = dict(
        device=str(device),
        machine=torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_model()}, {a.threads} threads",
        torch=torch.__version__,
        crop=256,
        batch=4,
        steps=a.steps,
        results={},
    )
    for name, kw in MODELS.items():
        for prec in precisions:
            r = bench(kw, prec, device, a.steps, a.warmup)
            r["paper_preset_hours"] = project(r)
            res["results"][f"{name}, {prec}"] = r
            print(name, prec, json.dumps(r), flush=True)
    for setting, how in SETTINGS.items():
        r = bench({}, precisions[0], device, a.steps, a.warmup, **how)
        r["paper_preset_hours"] = project(r)
        res["results"][f"DGSPNet, {precisions[0]}, {setting}"] = r
        print("DGSPNet", precisions[0], setting, json.dumps(r), flush=True)
    out = ROOT / "benchmarks" / "results" / f"train_{device.type}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
