"""`dgspnet_exp` leaves no trap: a refused start and a failed `dvc exp run` leave params.yaml byte-identical; the
ablation table parses real `dvc exp show --json` output (DVC 3.67.1) and renders through its papermill report."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import yaml

from dgspnet.experiments import ablation_tables, exp_cli, exp_parser, load_presets, parse_exp_show, run_ablation_report

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "exp_show_dvc3.67.1.json"
TABLES = ROOT.parent / "shared" / "reference" / "paper_tables.yaml"
BIN = Path(sys.executable).parent


@pytest.fixture
def repo(tmp_path, monkeypatch):
    "A temporary copy of the files dgspnet_exp reads, as the working directory, with this venv's dvc on PATH."
    for f in ("params.yaml", "dvc.yaml", "configs/experiments.yaml"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy(ROOT / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def tiny_dataset(root):
    "A folder in the plain layout (enough for the start checks; prepare would read the images)."
    for sub in ("images", "masks"): (root / sub).mkdir(parents=True)
    for f in ("train.txt", "test.txt"): (root / f).write_text("a\n")


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e: exp_cli(argv)
    assert e.value.code not in (0, None)
    return str(e.value.code) + capsys.readouterr().err


def test_refused_start_leaves_params_identical(repo, capsys):
    before = (repo / "params.yaml").read_bytes()
    msg = refused(["paper-nuaa-sirst"], capsys)                    # the reported trap: no data
    assert "configs/experiments.yaml: preset 'paper-nuaa-sirst': data.source: data/NUAA-SIRST" in msg
    tiny_dataset(repo / "data" / "nuaa-sirst")
    msg = refused(["cpu-nuaa-sirst", "--set", "train.epoch=3"], capsys)   # a mistyped key
    assert "unknown key(s) ['epoch']" in msg
    from dgspnet.text import ClipWeightsMissing, clip_weights_file
    try: clip_weights_file("openai")
    except ClipWeightsMissing:                                      # no CLIP weights on this machine
        assert "model.clip_weights='openai'" in refused(["paper-nuaa-sirst"], capsys)
    assert (repo / "params.yaml").read_bytes() == before


def test_dry_run_aliases_and_keys_once(repo, capsys):
    tiny_dataset(repo / "data" / "NUDT-SIRST")
    for flag in ("--dry-run", "--dry_run"):
        exp_cli(["cpu-nudt-sirst", flag, "--set", "train.epochs=2", "data.crop=128"])
        cmd = capsys.readouterr().out.split()
        keys = [w.split("=")[0] for w in cmd[cmd.index("-n") + 2:] if w != "-S"]
        assert len(keys) == len(set(keys)) and "train.epochs=2" in cmd and "train.epochs=10" not in cmd
    flags = [s[2:] for a in exp_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    assert len(flags) >= 11 and all(f.replace("_", "-") in flags and f.replace("-", "_") in flags for f in flags)


def git_dvc_repo(repo, stage_cmd):
    "Make `repo` a git + DVC repository whose only stage runs `stage_cmd` and reads train.epochs."
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"synthetic": {
        "cmd": stage_cmd, "params": ["train.epochs"], "outs": ["outputs/synthetic"]}}}))
    (repo / "configs" / "experiments.yaml").write_text(
        "presets:\n  boom: {description: a stage that fails, train.epochs: 7}\n")
    for c in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"],
              ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(c, cwd=repo, check=True, capture_output=True)


def test_failed_dvc_exp_run_restores_params(repo, capsys):
    "DVC 3.67.1 leaves a failed `dvc exp run`'s -S values in params.yaml; dgspnet_exp puts the file back."
    git_dvc_repo(repo, f'{sys.executable} -c "raise SystemExit(3)"')
    before = (repo / "params.yaml").read_bytes()
    with pytest.raises(SystemExit) as e: exp_cli(["boom"])
    assert e.value.code not in (0, None)
    assert "params.yaml: restored" in capsys.readouterr().err      # DVC had changed it
    assert (repo / "params.yaml").read_bytes() == before


def test_queue_leaves_params(repo):
    git_dvc_repo(repo, f'{sys.executable} -c "raise SystemExit(3)"')
    before = (repo / "params.yaml").read_bytes()
    exp_cli(["boom", "--queue"])
    assert (repo / "params.yaml").read_bytes() == before
    q = subprocess.run(["dvc", "queue", "status"], cwd=repo, capture_output=True, text=True).stdout
    assert "boom" in q and "Queued" in q
    subprocess.run(["dvc", "queue", "remove", "--all"], cwd=repo, capture_output=True)


def runs_on(dataset):
    runs = parse_exp_show(json.loads(FIXTURE.read_text()))
    for r in runs: r.params["data"]["source"] = f"data/{dataset}"
    return runs


def test_parse_real_exp_show():
    runs = {r.name: r for r in parse_exp_show(json.loads(FIXTURE.read_text()))}
    assert {n: r.status for n, r in runs.items()} == {"table2-0-0-0": "success", "table2-1-0-0": "success",
                                                      "queued-failing": "failed", "table3-4": "queued"}
    assert runs["table2-1-0-0"].metrics == pytest.approx({"IoU": 57.0, "nIoU": 40.0, "Pd": 90.0, "Fa": 12.0})
    assert runs["queued-failing"].metrics == {} and runs["table3-4"].metrics == {}


def test_ablation_tables_against_paper():
    if not TABLES.exists(): pytest.skip(f"{TABLES} not found (it sits beside the repository in this workspace)")
    paper = yaml.safe_load(TABLES.read_text())
    t = ablation_tables(runs_on("IRSTD-1K"), paper)
    t2 = t["Table 2, IRSTD-1K"]
    assert list(t2.index) == list(paper["table2_prompt_modules"]["rows"])
    assert t2.loc["0-0-0", "status"] == "done" and t2.loc["0-0-0", "IoU diff"] == pytest.approx(55.0 - 65.31)
    assert t2.loc["1-1-1", "status"] == "not run yet" and t2.loc["1-1-1", "IoU paper"] == 70.87
    assert t["Table 3, IRSTD-1K"].loc["4", "status"] == "queued"
    assert set(t["Table 2, NUDT-SIRST"]["status"]) == {"not run yet"}   # those runs were on IRSTD-1K


def test_ablation_report(tmp_path, monkeypatch):
    if not TABLES.exists(): pytest.skip(f"{TABLES} not found")
    monkeypatch.chdir(ROOT)
    show = tmp_path / "show.json"
    show.write_text(json.dumps([{**b, "experiments": b["experiments"]} for b in json.loads(FIXTURE.read_text())])
                    .replace("outputs/synthetic", "data/IRSTD-1K"))
    md = run_ablation_report(tmp_path / "out", TABLES, exp_show_json=str(show)).read_text()
    rows = [[v.strip() for v in l.strip("|").split("|")] for l in md.splitlines() if l.startswith("|")]
    assert ["0-0-0", "done", "55.00", "65.31", "-10.31"] in [r[:5] for r in rows]
    assert ["4", "queued"] in [r[:2] for r in rows] and ["1-1-1", "not run yet"] in [r[:2] for r in rows]
    assert (tmp_path / "out" / "report.ipynb").exists()


def test_metric_keys_are_those_evaluate_writes():
    "The ablation table reads the keys the evaluate stage writes (a renamed key would leave every row empty)."
    from dgspnet.evaluate import in_paper_units
    from dgspnet.experiments import METRIC_KEYS
    assert set(METRIC_KEYS.values()) == set(in_paper_units({"IoU": 0.5, "nIoU": 0.5, "Pd": 0.5, "Fa": 1.0}))
