"""Re-execute the evaluation report of a kept CPU run from the files it kept (its weights were not kept).

    python results/rerender_report.py results/nuaa-sirst-cpu --dataset ../shared/datasets/NUAA-SIRST

The run folders under results/ were made before the metrics moved to the paper's units and before the report's
figures were redrawn. This script converts what the run kept (metrics.json in fractions, pdfa.csv, per_image.csv,
params.yaml, the dvclive folder train/) into what `dgspnet_evaluate` writes today (metrics.json and pdfa.csv in the
paper's units, details.json, pdfa.png redrawn on a log Fa axis with the paper's point), keeps the run's own
gallery.png and attention.png (they need the model, whose weights were not kept: they are the figures of the
original run, in the old style), writes a tokens.md saying why the token words are missing, and executes
nbs/reports/evaluate.ipynb into <run>/report.ipynb. The numbers are those of the run; nothing is recomputed but
the target counts, which are read from the dataset's test masks.
"""
import argparse, csv, json, subprocess, sys
from pathlib import Path

import numpy as np
import yaml
from skimage.measure import label

from dgspnet.data import load_split_names, read_mask, resolve_layout
from dgspnet.evaluate import in_paper_units, plot_pd_fa

ROOT = Path(__file__).resolve().parents[1]


def convert(run:Path, dataset:Path):
    old = json.loads((run / "metrics.json").read_text())
    if "IoU_pct" in old: raise SystemExit(f"{run}/metrics.json is in the paper's units already")
    p = yaml.safe_load((run / "params.yaml").read_text())
    folder = resolve_layout(dataset)
    names = load_split_names(dataset, "test")
    gts = [read_mask(folder.paths(n)[1]) for n in names]
    n_targets = sum(int(label(g, connectivity=2).max()) for g in gts)
    free = sum(not g.any() for g in gts)
    metrics = dict(**{k: round(v, 2) for k, v in in_paper_units({k: old[k] for k in ("IoU", "nIoU", "Pd", "Fa")}).items()},
                   n_trainable=old["params_trainable"], text_tower_random=old["text_tower_random"], dataset=old["dataset"])
    details = dict(threshold=old["threshold"], n_test=old["n_test"], n_target_free=free, n_target_free_with_prediction=None,
                   nIoU_with_targets_pct=100 * old["nIoU"] if free == 0 else None, empty_iou=0.0, n_targets=n_targets,
                   params_frozen=old["params_frozen"], clip_weights=old["clip_weights"], pretrain_epochs=old["pretrain_epochs"],
                   train_epochs=old["train_epochs"], train_lr=p["train"]["lr"], crop=p["data"]["crop"],
                   batch_size=p["train"]["batch_size"], widths=list(p["model"]["widths"]),
                   rerendered="from the run's kept files by results/rerender_report.py; gallery.png and attention.png are the run's own")
    if free: raise SystemExit(f"{dataset}: {free} target-free test frames; their false alarms were not kept, cannot fill details.json")
    rows = list(csv.DictReader(open(run / "pdfa.csv")))
    curve = dict(threshold=[float(r["threshold"]) for r in rows], Pd=[float(r["Pd"]) for r in rows], Fa=[float(r["Fa"]) for r in rows])
    with open(run / "pdfa.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["threshold", "Pd_pct", "Fa_1e-6"])
        w.writerows(zip(curve["threshold"], (100 * v for v in curve["Pd"]), curve["Fa"]))
    per = list(csv.DictReader(open(run / "per_image.csv")))
    with open(run / "per_image.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["name", "IoU_pct"]); w.writerows((r["name"], 100 * float(r["IoU"])) for r in per)
    title = f"Pd-Fa, {old['dataset']} test ({old['n_test']} images)"
    plot_pd_fa(curve, old["dataset"], "random text tower" if old["text_tower_random"] else "this model", title).savefig(run / "pdfa.png", dpi=100)
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run / "details.json").write_text(json.dumps(details, indent=2) + "\n")
    (run / "tokens.md").write_text("The token words need the trained model, and this run's weights were not kept: "
                                   "rerun the run (see COMMAND.md) to see them.\n")


def render(run:Path):
    import matplotlib; matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 0.6)); fig.text(0.5, 0.5, "token words: not available (weights not kept)", ha="center", va="center")
    fig.savefig(run / "tokens.png", dpi=90)
    subprocess.run([str(Path(sys.executable).parent / "papermill"), "--no-progress-bar", "--log-level", "WARNING",
                    "nbs/reports/evaluate.ipynb", str(run.relative_to(ROOT) / "report.ipynb"),  # relative: no machine paths
                    "-p", "out_dir", str(run.relative_to(ROOT)), "-p", "train_live", str((run / "train").relative_to(ROOT))],
                   check=True, cwd=ROOT)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run"); ap.add_argument("--dataset", required=True)
    a = ap.parse_args()
    run = (ROOT / a.run).resolve() if not Path(a.run).is_absolute() else Path(a.run)
    convert(run, Path(a.dataset))
    render(run)
    print(f"{run}/report.ipynb")
