"""The kept runs under results/ and the README's Table 1 made from them."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from table1 import kept_runs, longest_run  # noqa: E402


def test_kept_runs_complete():
    "Every kept run has its command, metrics, details, params and executed report."
    runs = kept_runs()
    assert len(runs) >= 3
    for r in runs:
        for f in ("COMMAND.md", "metrics.json", "details.json", "params.yaml", "report.ipynb"):
            assert (r["dir"] / f).is_file(), f"{r['dir']}: no {f}"


def test_longest_run_breaks_ties_by_iou():
    runs = [dict(metrics=dict(dataset="A", IoU_pct=i), details=dict(train_epochs=e)) for i, e in [(60, 100), (70, 100),
                                                                                                  (80, 40)]]
    assert longest_run(runs, "A")["metrics"]["IoU_pct"] == 70 and longest_run(runs, "B") is None


def test_readme_holds_table1():
    "The README's Table 1 is what tools/table1.py writes from the kept runs (run it and paste its output)."
    table = subprocess.run([sys.executable, str(ROOT / "tools" / "table1.py")], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert table in (ROOT / "README.md").read_text()
    for r in kept_runs():
        m = json.loads((r["dir"] / "metrics.json").read_text())
        assert m["text_tower_random"] == (r["details"]["clip_weights"] == "none")
