"""A clean repro is a clean record (RECORD).

A fresh clone's `dvc repro` writes the `dvc.lock` and the git-tracked results that were committed, byte for byte:
nothing DVC hashes holds a time (run.log is not an output; the report has no run metadata; PNGs have no version).
A dataset linked into data/ is hashed through the link by the prepare stage, named by the link, and leaves git and
DVC with nothing to report. Tiny params (tests/test_pipeline.py's TINY); CLIP weights are never needed.
"""
import json
from pathlib import Path

import yaml

from test_pipeline import BIN, TINY, copy_repo, params, run

DVC = str(BIN / "dvc")


def porcelain(repo) -> list[str]:
    return run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout.splitlines()


def test_fresh_clone_repro_is_the_committed_record(tmp_path):
    "Run the pipeline, commit its record; a fresh clone's `dvc repro` (seconds later, new timestamps) changes nothing."
    first = copy_repo(tmp_path / "first", TINY)
    run([DVC, "repro"], first, timeout=600)
    assert (first / "outputs/train/run.log").read_text()  # the log is written, beside the hashed model
    run("git add -A && git commit -qm 'tiny run'", first)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(first), str(clone)], tmp_path)
    assert not (clone / "outputs").exists()  # nothing to reuse: every stage runs again
    r = run([DVC, "repro"], clone, timeout=600)
    for stage in ("synthetic", "prepare", "pretrain", "train", "evaluate"):
        assert f"Running stage '{stage}'" in r.stdout, r.stdout
    assert (clone / "dvc.lock").read_text() == (first / "dvc.lock").read_text()
    assert porcelain(clone) == [], porcelain(clone)
    # the run logs differ (their timestamps), which is why they are not outputs
    logs = [(d / "outputs/train/run.log").read_text() for d in (first, clone)]
    assert logs[0] != logs[1]


def test_linked_dataset(tmp_path):
    "data/NUAA-SIRST is a link to a folder outside the repository, as a large dataset is kept."
    from dgspnet.synthetic import make_synthetic_dataset
    s = TINY["data"]["synthetic"]
    target = Path(make_synthetic_dataset(tmp_path / "big" / "open-nuaa", n_train=s["n_train"], n_test=s["n_test"],
                                         size=s["size"], seed=s["seed"]))
    repo = copy_repo(tmp_path / "repo", params(data={"source": "data/NUAA-SIRST"}))
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "NUAA-SIRST").symlink_to(target, target_is_directory=True)
    assert porcelain(repo) == []  # the link is not for git (data/.gitignore)
    run([DVC, "exp", "run"], repo, timeout=600)
    # the prepare stage hashes the dataset through the link
    dep = next(d for d in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["deps"]
               if d["path"] == "data/NUAA-SIRST")
    assert dep["nfiles"] == sum(1 for p in target.rglob("*") if p.is_file())
    # named by the link, so the report finds the paper's row (NUAA-SIRST: IoU 80.32)
    assert json.loads((repo / "results/evaluate/metrics.json").read_text())["dataset"] == "NUAA-SIRST"
    report = json.loads((repo / "results/evaluate/report.ipynb").read_text())
    shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for c in report["cells"]
                    for o in c.get("outputs", []))
    assert "No paper numbers" not in shown and "| IoU_pct | " in shown and "| 80.32 |" in shown, shown
    # nothing under data/ changed for git or DVC, and there is nothing to check out
    assert not [l for l in porcelain(repo) if l[3:].startswith("data")], porcelain(repo)
    assert "up to date" in run([DVC, "status"], repo).stdout
    out = run([DVC, "checkout"], repo)
    assert "data" not in out.stdout + out.stderr, out.stdout + out.stderr
    # DVC refuses to add the link (it would not follow it), and no catch-all data.dvc can be made over data/
    r = run([DVC, "add", "data/NUAA-SIRST"], repo, check=False)
    assert r.returncode != 0 and "symlinked directories" in r.stdout + r.stderr, r.stdout + r.stderr
    r = run([DVC, "add", "data"], repo, check=False)
    assert r.returncode != 0 and "already tracked by SCM" in r.stdout + r.stderr, r.stdout + r.stderr
    assert (repo / "data" / "NUAA-SIRST").is_symlink() and not (repo / "data.dvc").exists()
    # a change in the linked folder is a change of the pipeline's input
    next((target / "images").iterdir()).write_bytes(b"changed")
    st = run([DVC, "status", "prepare"], repo).stdout
    assert "modified:" in st and "data/NUAA-SIRST" in st, st


def test_copied_dataset_is_tracked_alone(tmp_path):
    "`dvc add data/<NAME>` on a copy: its .dvc file is for git, DVC sees it, and checkout keeps the data."
    from dgspnet.synthetic import make_synthetic_dataset
    repo = copy_repo(tmp_path / "repo", TINY)
    make_synthetic_dataset(repo / "data" / "NUAA-SIRST", n_train=2, n_test=1, size=32, seed=0)
    assert porcelain(repo) == []  # the copy is not for git
    run([DVC, "add", "data/NUAA-SIRST"], repo)
    assert porcelain(repo) == ["?? data/NUAA-SIRST.dvc"], porcelain(repo)
    assert "data/NUAA-SIRST" not in run([DVC, "status"], repo).stdout
    # a .dvc file that DVC takes for git-ignored is not collected, and checkout then deletes its data
    out = run([DVC, "checkout"], repo, check=False)  # (the pipeline's outputs are not in this copy's cache)
    assert "data/NUAA-SIRST" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert any((repo / "data" / "NUAA-SIRST" / "images").iterdir())
