"""Test IoU and nIoU over training epochs of a kept run, from its dvclive folder, beside the paper's Table 1 IoU.

    python tools/iou_curve.py results/nuaa-sirst-cpu-100

Reads <run>/train/plots/metrics/test/{IoU,nIoU}_pct.tsv (percent, logged every train.eval_every epochs), or
{IoU,nIoU}.tsv (fractions) where a kept run's folder holds those, and writes <run>/iou_curve.png. The paper's IoU
for the run's dataset (the last folder of `data.source` in <run>/params.yaml) comes from configs/paper_tables.yaml
(`dgspnet.evaluate.paper_row`); a dataset the paper does not report gets no line.
"""

import argparse, csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from dgspnet.evaluate import paper_row


def read_tsv(folder: Path, name: str) -> tuple:
    "(epochs, values in %) of test metric `name` (IoU or nIoU) logged in `folder`."
    path, scale = folder / f"{name}_pct.tsv", 1.0
    if not path.is_file():
        path, scale = folder / f"{name}.tsv", 100.0  # fractions
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    key = next(k for k in rows[0] if k != "step")
    return [int(r["step"]) for r in rows], [scale * float(r[key]) for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a kept run's folder under results/")
    a = ap.parse_args()
    dataset = Path(yaml.safe_load((a.run / "params.yaml").read_text())["data"]["source"]).name
    paper = paper_row(dataset)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name in ("IoU", "nIoU"):
        x, y = read_tsv(a.run / "train" / "plots" / "metrics" / "test", name)
        ax.plot(x, y, marker="o", ms=3, label=f"test {name} (last {y[-1]:.1f})")
    if paper:
        iou = paper["IoU_pct"]
        ax.axhline(iou, color="grey", ls="--", lw=1, label=f"paper, Table 1 IoU ({iou})")
    ax.set(xlabel="training epoch", ylabel="%", ylim=(0, 100), title=f"{a.run.name}: test metrics during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.run / "iou_curve.png", dpi=110)
    print(a.run / "iou_curve.png")


if __name__ == "__main__":
    main()
