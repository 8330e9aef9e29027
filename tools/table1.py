"""Table 1 of the README: for each benchmark, the longest kept run under results/ (the higher IoU among runs of
equal length) beside the paper's DGSPNet and SCTransNet rows (configs/paper_tables.yaml).

    python tools/table1.py        # prints the markdown table; tests/test_results.py checks the README holds it

A kept run is a folder results/<run>/ with a COMMAND.md and the evaluate stage's metrics.json and details.json.
"""

import json
from pathlib import Path

from dgspnet.config import read_paper_tables

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["NUAA-SIRST", "NUDT-SIRST", "IRSTD-1K"]
# the paper's rows and their (schedule, text tower) columns
PAPER_ROWS = {"DGSPNet": ("800 + 800", "CLIP ViT-B/32"), "SCTransNet": ("as in the paper's Table 1", "none")}


def kept_runs(results=ROOT / "results") -> list[dict]:
    "Every kept run: its folder, metrics and details."
    return [
        dict(
            dir=d,
            metrics=json.loads((d / "metrics.json").read_text()),
            details=json.loads((d / "details.json").read_text()),
        )
        for d in sorted(results.iterdir())
        if (d / "COMMAND.md").is_file() and (d / "metrics.json").is_file()
    ]


def longest_run(runs: list, dataset: str) -> dict | None:
    "The run on `dataset` with the most training epochs, the higher IoU among equals (None if there is none)."
    on = [r for r in runs if r["metrics"]["dataset"] == dataset]
    return max(on, key=lambda r: (r["details"]["train_epochs"], r["metrics"]["IoU_pct"]), default=None)


def _fmt(v) -> str:
    return "—" if v is None else f"{v:g}"


def table1(results=ROOT / "results") -> str:
    "The markdown table."
    t1 = read_paper_tables()["table1_sota"]
    runs = kept_runs(results)
    lines = [
        "| benchmark | model | schedule (pretraining + training epochs) | text tower "
        "| IoU (%) | nIoU (%) | Pd (%) | Fa (1e-6) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds in DATASETS:
        r = longest_run(runs, ds)
        if r is None:
            lines.append(f"| {ds} | ours | not run yet | | | | | |")
        else:
            m, d = r["metrics"], r["details"]
            tower = "RANDOM" if m["text_tower_random"] else d["clip_weights"]
            link = f"[ours](results/{r['dir'].name}/COMMAND.md)"
            lines.append(
                f"| {ds} | {link} | {d['pretrain_epochs']} + {d['train_epochs']} | {tower} | "
                f"{m['IoU_pct']:.2f} | {m['nIoU_pct']:.2f} | {m['Pd_pct']:.2f} | {m['Fa_1e-6']:.2f} |"
            )
        for name, (schedule, tower) in PAPER_ROWS.items():
            row = dict(zip(t1["columns"], t1["rows"][name]))
            iou, pd, fa = (row[f"{ds}.{k}"] for k in ("IoU", "Pd", "Fa"))
            lines.append(
                f"| {ds} | paper's {name} | {schedule} | {tower} | {_fmt(iou)} | — | {_fmt(pd)} | {_fmt(fa)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table1())
