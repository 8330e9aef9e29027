"""The evaluation report shows what it says: papermill executes the report template on a tiny run, every figure section gets an image, and no output leaks a machine path or a warning."""
import json, os
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
from PIL import Image

from dgspnet.checkpoint import build_model, save_trained
from dgspnet.config import config_from_dict
from dgspnet.data import prepare_dataset
from dgspnet.evaluate import evaluate
from dgspnet.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "nbs" / "reports" / "evaluate.ipynb"
FIGURE_SECTIONS = ["Training curves", "Pd-Fa curve", "Best and worst test images", "TGSA attention maps", "What the learned tokens say"]


def sections(nb) -> dict:
    "{'## title': [code cells until the next '## ' heading]}"
    out, cur = {}, None
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            h = [l for l in "".join(c["source"]).splitlines() if l.startswith("## ")]
            if h: cur = h[0][3:].strip(); out[cur] = []
        elif cur is not None: out[cur].append(c)
    return out


def section(secs:dict, name:str) -> list:
    "The cells of the section whose title starts with `name` (KeyError naming it when there is none)."
    hits = [v for k, v in secs.items() if k.startswith(name)]
    if not hits: raise KeyError(f"no section '## {name}...' in {list(secs)}")
    return hits[0]


def has_image(cells) -> bool:
    return any("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def texts(nb):
    "Every text the executed notebook shows: streams, errors, text/plain, text/markdown, text/html."
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if "text" in o: yield "".join(o["text"])
            for k in ("text/plain", "text/markdown", "text/html"):
                if k in o.get("data", {}): yield "".join(o["data"][k])
            if o.get("output_type") == "error": yield "\n".join(o.get("traceback", []))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "An evaluated untrained tiny model on a synthetic set with one target-free test frame, and a fake dvclive folder."
    tmp = tmp_path_factory.mktemp("report")
    syn = make_synthetic_dataset(tmp / "syn", n_train=4, n_test=3, size=40)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(syn / "masks" / "test_0001.png")
    man = prepare_dataset(syn, tmp / "prep")
    cfg = config_from_dict({"model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none"}, "evaluate": {"curve_points": 5}})
    save_trained(build_model(cfg), cfg, json.loads(man.read_text())["stats"], tmp / "model.pt")
    evaluate(tmp / "model.pt", man, tmp / "results/evaluate", progress=False)
    live = tmp / "results/train/plots/metrics"
    (live / "train").mkdir(parents=True); (live / "test").mkdir()
    (live / "train/loss.tsv").write_text("step\tloss\n1\t0.9\n2\t0.7\n3\t0.6\n")
    (live / "test/IoU.tsv").write_text("step\tIoU\n2\t0.1\n3\t0.2\n")
    (live / "test/Fa.tsv").write_text("step\tFa\n2\t300.0\n3\t120.0\n")
    return tmp


@pytest.fixture(scope="module")
def report(tiny_run):
    "The report executed the way the evaluate stage runs it: from the run's root, with relative parameters."
    out = tiny_run / "results/evaluate/report.ipynb"
    pm.execute_notebook(str(TEMPLATE), str(out), parameters=dict(out_dir="results/evaluate", train_live="results/train"),
                        cwd=str(tiny_run), kernel_name="python3", progress_bar=False, log_output=False)
    return json.loads(out.read_text())


def test_template_has_the_figure_sections():
    secs = sections(json.loads(TEMPLATE.read_text()))
    for name in FIGURE_SECTIONS: section(secs, name)


def test_every_figure_section_has_an_image(report):
    secs = sections(report)
    missing = [s for s in FIGURE_SECTIONS if not has_image(section(secs, s))]
    assert not missing, f"figure sections without an image output: {missing}"


def test_no_machine_paths_or_warnings(report, tiny_run):
    paths = {str(tiny_run), str(ROOT), os.path.expanduser("~"), "/tmp/", "/work/", "site-packages"}
    for t in texts(report):
        leaked = [p for p in paths if p in t]
        assert not leaked, f"output shows machine path(s) {leaked}: {t[:300]}"
        assert "Warning" not in t, f"output shows a Python warning: {t[:300]}"   # (the random-tower banner is 'WARNING: ...')
    assert not [o for c in report["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr"], "stderr output in the report"


def test_target_free_frames_are_stated(report):
    md = "\n".join(texts(report))
    assert "**1 of 3 test frames are target-free**" in md
    assert "nIoU can be at most 66.67 %" in md
