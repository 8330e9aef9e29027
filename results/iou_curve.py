"""Test IoU and nIoU over training epochs of a kept run, from its dvclive folder, beside the paper's Table 1 IoU.

    python results/iou_curve.py results/nuaa-sirst-cpu-100 --paper 80.32

Reads <run>/train/plots/metrics/test/{IoU,nIoU}.tsv (fractions, logged every train.eval_every epochs) and writes
<run>/iou_curve.png.
"""
import argparse, csv
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_tsv(path:Path) -> tuple:
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    key = next(k for k in rows[0] if k != "step")
    return [int(r["step"]) for r in rows], [100 * float(r[key]) for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path); ap.add_argument("--paper", type=float, help="the paper's IoU (%%) for this dataset")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name in ("IoU", "nIoU"):
        x, y = read_tsv(a.run / "train" / "plots" / "metrics" / "test" / f"{name}.tsv")
        ax.plot(x, y, marker="o", ms=3, label=f"test {name} (last {y[-1]:.1f})")
    if a.paper: ax.axhline(a.paper, color="grey", ls="--", lw=1, label=f"paper, Table 1 IoU ({a.paper})")
    ax.set(xlabel="training epoch", ylabel="%", ylim=(0, 100), title=f"{a.run.name}: test metrics during training")
    ax.grid(alpha=0.3); ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(); fig.savefig(a.run / "iou_curve.png", dpi=110)
    print(a.run / "iou_curve.png")


if __name__ == "__main__":
    main()
