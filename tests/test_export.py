"""dgspnet_export and dgspnet_predict --runtime onnx as a user meets them: a trained model.pt to model.onnx, the
frames predicted by onnxruntime equal to PyTorch's, and the user's mistakes answered in one line."""
import os, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from dgspnet.config import config_from_dict
from dgspnet.checkpoint import build_model, save_trained, load_trained
from dgspnet.cli import export_cli, predict_cli
from dgspnet.export import load_onnx
from dgspnet.inference import predict_image, predict_tiled
from cli_run import run_cli

TINY = {"model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none", "head_prior": None}}
STATS = {"mean": 0.3, "std": 0.1}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    "A tiny untrained model.pt (probabilities spread over (0, 1)) and its model.onnx, written by dgspnet_export."
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    save_trained(build_model(cfg), cfg, STATS, d/"model.pt")
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["dgspnet_export", str(d/"model.pt"), str(d/"model.onnx")])
    export_cli()
    mp.undo()
    return d


def test_onnx_equals_pytorch_on_several_sizes(exported):
    trained, onnx = load_trained(exported/"model.pt"), load_onnx(exported/"model.onnx")
    assert (onnx.stats, onnx.threshold, onnx.param_counts) == (trained.stats, trained.threshold, trained.param_counts)
    rng = np.random.default_rng(1)
    for h, w in [(32, 32), (45, 70), (181, 317), (256, 256)]:
        img = rng.random((h, w)).astype(np.float32)
        ref, got = predict_image(trained.net, img, STATS), predict_image(onnx.net, img, STATS)
        assert got.shape == (h, w) and got.dtype == np.float32
        assert np.abs(got - ref).max() < 1e-4, (h, w, np.abs(got - ref).max())
        assert ref.std() > 1e-3  # the maps vary: the comparison is not between two constants
    img = rng.random((200, 260)).astype(np.float32)  # tiles of a large frame run through the same graph
    tiled = predict_tiled(onnx.net, img, STATS, tile=96, overlap=32)
    assert np.abs(tiled - predict_tiled(trained.net, img, STATS, tile=96, overlap=32)).max() < 1e-4


def test_predict_runtime_onnx_matches_torch(exported, tmp_path, monkeypatch, capsys):
    frames = tmp_path/"frames"
    frames.mkdir()
    rng = np.random.default_rng(2)
    for name, shape in [("a.png", (40, 50)), ("b.png", (77, 64))]:
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(frames/name)
    for runtime, model in [("torch", "model.pt"), ("onnx", "model.onnx")]:
        argv = [exported/model, frames, tmp_path/runtime, "--runtime", runtime]
        code, out, err = run_cli(predict_cli, "dgspnet_predict", argv, monkeypatch, capsys)
        assert code == 0, err
        assert "2 frame(s) predicted" in out
    for name in ("a", "b"):
        t, o = (np.asarray(Image.open(tmp_path/r/f"{name}_png_prob.png"), np.int16) for r in ("torch", "onnx"))
        assert t.shape == o.shape and np.abs(t - o).max() <= 1  # 8-bit probability maps: at most one level apart


def test_user_mistakes_are_one_line(exported, tmp_path, monkeypatch, capsys):
    frames = tmp_path/"frames"
    frames.mkdir()
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(frames/"a.png")
    cases = [
        (predict_cli, "dgspnet_predict", [exported/"model.pt", frames, tmp_path/"o1", "--runtime", "onnx"],
         "dgspnet_export"),
        (predict_cli, "dgspnet_predict", [exported/"model.onnx", frames, tmp_path/"o2"], "--runtime onnx"),
        (predict_cli, "dgspnet_predict", [exported/"model.onnx", frames, tmp_path/"o3", "--runtime", "tf"],
         "--runtime"),
        (predict_cli, "dgspnet_predict", [tmp_path/"none.onnx", frames, tmp_path/"o4", "--runtime", "onnx"],
         "no such ONNX file"),
        (export_cli, "dgspnet_export", [tmp_path/"none.pt", tmp_path/"m.onnx"], "no such file"),
        (predict_cli, "dgspnet_predict", [exported/"model.onnx", frames, tmp_path/"o6", "--runtime", "onnx",
                                          "--precision", "bf16"], "--precision bf16 applies to --runtime torch only"),
    ]
    for cli, prog, argv, says in cases:
        code, out, err = run_cli(cli, prog, argv, monkeypatch, capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (argv, err)
    (tmp_path/"fake.onnx").write_text("not a model")
    argv = [tmp_path/"fake.onnx", frames, tmp_path/"o5", "--runtime", "onnx"]
    code, out, err = run_cli(predict_cli, "dgspnet_predict", argv, monkeypatch, capsys)
    assert code == 2 and "dgspnet_export" in err and len(err.strip().splitlines()) == 1, err
