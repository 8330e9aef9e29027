"""The reference model in models/: its card's metrics on NUAA-SIRST's test split (when ../shared has the dataset),
and a target found on a small frame made here (always). It runs the whole inference path a user runs."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from dgspnet.checkpoint import load_trained
from dgspnet.data import prepare_dataset, read_image
from dgspnet.inference import predict_image

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "nuaa-sirst-cpu-100.pt"
CARD = MODEL.with_suffix(".md")
DATASETS = Path(os.environ.get("DGSPNET_DATASETS", ROOT.parent / "shared" / "datasets"))
BIN = Path(sys.executable).parent
METRICS = ["IoU_pct", "nIoU_pct", "Pd_pct", "Fa_1e-6"]


def card() -> dict:
    "The card's YAML front matter (between the first two '---' lines)."
    return yaml.safe_load(CARD.read_text().split("---\n")[1])


def test_card_describes_the_file():
    "The card names this file, its size and its weights' type, and says the text tower is random."
    c = card()
    assert c["file"] == MODEL.name and MODEL.stat().st_size < 15e6
    trained = load_trained(MODEL)
    assert trained.text_tower_random and c["text_tower"].startswith("RANDOM")
    recipe = trained.config
    assert (recipe.data.crop, recipe.train.epochs) == (c["recipe"]["crop"], c["recipe"]["train_epochs"])


def _run(*argv, cwd):
    subprocess.run(list(map(str, argv)), check=True, capture_output=True, cwd=cwd)


def test_card_metrics_on_nuaa_sirst(tmp_path):
    """dgspnet_evaluate on NUAA-SIRST's test split gives the card's metrics to 0.01, and dgspnet_score of
    dgspnet_predict's float maps of the same frames gives exactly dgspnet_evaluate's."""
    root = DATASETS / "NUAA-SIRST"
    if not root.is_dir():
        pytest.skip(f"NUAA-SIRST not found at {root} (set DGSPNET_DATASETS to its parent folder)")
    manifest = prepare_dataset(root, tmp_path / "prepare", resize_masks=True)
    _run(BIN / "dgspnet_evaluate", "--checkpoint", MODEL, "--manifest", manifest, "--out", "eval", cwd=tmp_path)
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    want = card()["metrics"]
    assert {k: got[k] for k in METRICS} == pytest.approx({k: want[k] for k in METRICS}, abs=0.0100001)

    frames = [root / "images" / f"{n.strip()}.png" for n in (root / "test.txt").read_text().split()]
    _run(BIN / "dgspnet_predict", MODEL, *frames, "pred", "--save_prob", "npy", cwd=tmp_path)
    _run(BIN / "dgspnet_score", "pred", root, "--resize_masks", "--suffix", "_png_prob", "--out", "score", cwd=tmp_path)
    scored = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert {k: scored[k] for k in METRICS} == {k: got[k] for k in METRICS}


def test_finds_a_small_target(tmp_path):
    "A 3x3 bright spot on a smooth, noisy 96x128 sky is the only detection, at its place."
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    sky = 90 + 0.3 * xx + rng.normal(0, 2, (96, 128))
    sky[40:43, 70:73] += 60
    Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8)).save(tmp_path / "frame.png")
    trained = load_trained(MODEL)
    prob = predict_image(trained.net, read_image(tmp_path / "frame.png"), trained.stats)
    mask = prob > trained.threshold
    assert mask[40:43, 70:73].any() and not mask[:, :60].any() and not mask[:, 80:].any()
    assert np.unravel_index(prob.argmax(), prob.shape) in {(y, x) for y in range(40, 43) for x in range(70, 73)}
