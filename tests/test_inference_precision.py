"""--precision of dgspnet_evaluate and dgspnet_predict as a user meets it: bf16 (the text tower's layers in bfloat16)
is recorded in evaluate's details.json and predict's frames.csv, moves the probabilities a little and no more, and
a wrong value is one line before any work."""
import csv, json, os, sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from dgspnet.checkpoint import build_model, save_trained
from dgspnet.cli import evaluate_cli, predict_cli
from dgspnet.config import config_from_dict
from dgspnet.data import load_manifest, prepare_dataset
from dgspnet.synthetic import make_synthetic_dataset
from cli_run import run_cli

# no head prior: the untrained model's probabilities spread over (0, 1), so a change in them is visible
TINY = {"model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none", "head_prior": None},
        "evaluate": {"curve_points": 3, "gallery": 1, "attention_images": 1}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A synthetic dataset (prepared) and a tiny untrained model.pt."
    d = tmp_path_factory.mktemp("precision")
    make_synthetic_dataset(d/"ds", n_train=4, n_test=3, size=48, seed=1)
    manifest = prepare_dataset(d/"ds", d/"prep")
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    save_trained(build_model(cfg), cfg, load_manifest(manifest)["stats"], d/"model.pt")
    return d, manifest


def test_evaluate_records_precision(setup, monkeypatch, capsys):
    d, manifest = setup
    details, metrics = {}, {}
    for precision in ("fp32", "bf16"):
        extra = [] if precision == "fp32" else ["--precision", "bf16"]  # fp32 is the default
        argv = ["--checkpoint", d/"model.pt", "--manifest", manifest, "--out", d/f"ev_{precision}", *extra]
        monkeypatch.setattr(sys, "argv", ["dgspnet_evaluate", *map(str, argv)])
        evaluate_cli()  # returns on success (no SystemExit)
        capsys.readouterr()
        details[precision] = json.loads((d/f"ev_{precision}"/"details.json").read_text())
        metrics[precision] = json.loads((d/f"ev_{precision}"/"metrics.json").read_text())
    assert (details["fp32"]["precision"], details["bf16"]["precision"]) == ("fp32", "bf16")
    for k in ("IoU_pct", "nIoU_pct"):
        assert abs(metrics["bf16"][k] - metrics["fp32"][k]) < 1.0, (k, metrics)


def test_predict_records_precision(setup, monkeypatch, capsys):
    d, manifest = setup
    frames = sorted((d/"ds"/"images").glob("*.png"))[:2]
    probs = {}
    for precision in ("fp32", "bf16"):
        argv = [d/"model.pt", *frames, d/f"pred_{precision}", "--save_prob", "npy", "--precision", precision]
        code, out, err = run_cli(predict_cli, "dgspnet_predict", argv, monkeypatch, capsys)
        assert code == 0, err
        rows = list(csv.DictReader(open(d/f"pred_{precision}"/"frames.csv")))
        assert [r["precision"] for r in rows] == [precision] * 2
        probs[precision] = np.stack([np.load(d/f"pred_{precision}"/f"{f.stem}_png_prob.npy") for f in frames])
    diff = np.abs(probs["bf16"] - probs["fp32"]).max()
    assert 0 < diff < 1e-2, diff  # the bf16 text tower ran, and moved the probabilities little
    assert probs["fp32"].std() > 1e-3  # the maps vary: the comparison is not between two constants


@pytest.mark.parametrize("cli, prog", [(evaluate_cli, "dgspnet_evaluate"), (predict_cli, "dgspnet_predict")])
def test_wrong_precision_is_one_line(setup, tmp_path, monkeypatch, capsys, cli, prog):
    d, manifest = setup
    argv = (["--checkpoint", tmp_path/"none.pt", "--manifest", manifest] if cli is evaluate_cli
            else [tmp_path/"none.pt", d/"ds"/"images", tmp_path/"out"])
    code, out, err = run_cli(cli, prog, [*argv, "--precision", "fp16"], monkeypatch, capsys)
    assert code == 2 and err.strip() == f"{prog}: error: --precision 'fp16': use fp32 (the default) or bf16 " \
        "(the text tower in bfloat16)", err
    assert not (tmp_path/"out").exists()  # refused before any work
