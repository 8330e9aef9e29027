"""`dgspnet_exp` leaves no trap: a refused start and a failed `dvc exp run` leave params.yaml byte-identical; values
reach DVC as written (one value each, shell-quoted when printed); no run starts while another holds the workspace;
every key the README names is one `dvc exp run -S` accepts. The ablation table parses real `dvc exp show --json`
output (DVC 3.67.1) and renders through its papermill report."""
import json, os, re, shlex, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

from dgspnet.config import read_paper_tables
from dgspnet.experiments import (ablation_tables, dvc_reads, exp_cli, exp_parser, load_presets, parse_exp_show,
                                 run_ablation_report)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "exp_show_dvc3.67.1.json"
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


ODD = ["data/a,b", "data/NUAA été", "data/x; touch pwned", "data/$(touch pwned)"]  # a sweep / a parse error for DVC


@pytest.mark.parametrize("value", ODD)
def test_dry_run_prints_the_argv_it_runs(repo, capsys, monkeypatch, value):
    "The --dry-run line, split as a shell splits it, is the argv dgspnet_exp runs; DVC reads the value as one string."
    tiny_dataset(repo / value)
    exp_cli(["cpu-nudt-sirst", "--dry-run", "--set", f"data.source={value}"])
    printed = capsys.readouterr().out.strip()
    ran = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: ran.append(cmd) or 0)
    exp_cli(["cpu-nudt-sirst", "--set", f"data.source={value}"])
    assert shlex.split(printed) == ran[0] and len(printed.splitlines()) == 1
    o = dvc_reads(next(w for w in ran[0] if w.startswith("data.source=")))
    assert not o.is_sweep_override() and o.value() == value
    assert not (repo / "pwned").exists()


@pytest.mark.parametrize("value", ODD[:2])
def test_queue_one_experiment_per_value(repo, value):
    "A comma is part of the value: one queued experiment, whose params hold the value as written."
    git_dvc_repo(repo, f'{sys.executable} -c "raise SystemExit(3)"')
    tiny_dataset(repo / value)
    exp_cli(["boom", "--queue", "--set", f"data.source={value}"])
    show = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True).stdout)
    queued = [r for r in parse_exp_show(show) if r.status == "queued"]
    subprocess.run(["dvc", "queue", "remove", "--all"], cwd=repo, capture_output=True)
    assert [(r.name, r.param("data.source")) for r in queued] == [("boom", value)]


def test_seeds_dry_run_one_command_per_preset_and_seed(repo, capsys):
    "--seeds N...: one `dvc exp run` per preset and seed, named <preset>-seedN, with base.seed=N (over --set)."
    tiny_dataset(repo / "data" / "NUDT-SIRST")
    before = (repo / "params.yaml").read_bytes()
    exp_cli(["cpu-nudt-sirst", "--dry-run", "--seeds", "0", "1", "2", "--set", "base.seed=9"])
    cmds = [shlex.split(l) for l in capsys.readouterr().out.splitlines()]
    assert [c[c.index("-n") + 1] for c in cmds] == [f"cpu-nudt-sirst-seed{s}" for s in (0, 1, 2)]
    assert [[w for w in c if w.startswith("base.seed=")] for c in cmds] == [[f"base.seed={s}"] for s in (0, 1, 2)]
    assert (repo / "params.yaml").read_bytes() == before


def test_seeds_queue_one_experiment_per_seed(repo):
    "--queue --seeds 0 1 queues <preset>-seed0 and <preset>-seed1, each with its base.seed in its params."
    git_dvc_repo(repo, f'{sys.executable} -c "raise SystemExit(3)"')
    exp_cli(["boom", "--queue", "--seeds", "0", "1"])
    show = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True).stdout)
    queued = [r for r in parse_exp_show(show) if r.status == "queued"]
    subprocess.run(["dvc", "queue", "remove", "--all"], cwd=repo, capture_output=True)
    assert sorted((r.name, r.param("base.seed")) for r in queued) == [("boom-seed0", 0), ("boom-seed1", 1)]


def test_busy_workspace_refused_queue_allowed(repo, capsys):
    "While a real `dvc exp run` holds the workspace, a run is refused in one line (params.yaml untouched); --queue works."
    git_dvc_repo(repo, f'{sys.executable} -c "import time; time.sleep(120)"')
    first = subprocess.Popen(["dvc", "exp", "run", "-S", "train.epochs=2"], cwd=repo, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        marker = repo / ".dvc" / "tmp" / "exps" / "run" / "workspace" / "workspace.json"
        for _ in range(600):                                            # DVC marks its workspace run
            if marker.exists(): break
            time.sleep(0.1)
        assert marker.exists(), "the first dvc exp run did not start"
        written = (repo / "params.yaml").read_bytes()
        assert b"epochs: 2" in written                                  # the first run's value
        with pytest.raises(SystemExit) as e: exp_cli(["boom"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert "is busy" in err and "--queue" in err and str(first.pid) in err, err
        assert (repo / "params.yaml").read_bytes() == written
        exp_cli(["boom", "--queue"])
        q = subprocess.run(["dvc", "queue", "status"], cwd=repo, capture_output=True, text=True).stdout
        assert "boom" in q and "Queued" in q
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(60)
        subprocess.run(["dvc", "queue", "remove", "--all"], cwd=repo, capture_output=True)


def test_one_line_errors_exit_2_and_debug(repo, capsys):
    with pytest.raises(SystemExit) as e: exp_cli(["no-such-preset"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("dgspnet_exp: error: unknown preset(s) ['no-such-preset']") and err.count("\n") == 1
    from dgspnet.config import UserError
    with pytest.raises(UserError): exp_cli(["no-such-preset", "--debug"])


def test_without_dvc_one_line(repo, capsys, monkeypatch):
    tiny_dataset(repo / "data" / "NUDT-SIRST")
    monkeypatch.setitem(sys.modules, "dvc.utils.hydra", None)                # as if DVC were not installed
    with pytest.raises(SystemExit) as e: exp_cli(["cpu-nudt-sirst", "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("dgspnet_exp: error: DVC is not installed") and err.count("\n") == 1, err


def test_every_readme_key_is_a_dvc_param(tmp_path):
    "`dvc exp run --dry -S key=value` accepts every key the README names (its params.yaml value; --dry runs nothing)."
    from test_pipeline import copy_repo
    from test_presets import readme_keys
    from dgspnet.experiments import _fmt, _lookup
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    repo = copy_repo(tmp_path / "repo", params)
    keys = readme_keys()
    assert {"pretrain.steps_per_epoch", "train.steps_per_epoch", "data.source", "train.epochs"} <= set(keys)
    words = [w for k in keys for w in ("-S", f"{k}={_fmt(_lookup(params, k))}")]
    r = subprocess.run([str(BIN / "dvc"), "exp", "run", "--dry", "synthetic", *words], cwd=repo, capture_output=True,
                       text=True, env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"), timeout=300)
    assert r.returncode == 0, (words, r.stdout[-2000:], r.stderr[-2000:])


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
    paper = read_paper_tables()
    t = ablation_tables(runs_on("IRSTD-1K"), paper)
    t2 = t["Table 2, IRSTD-1K"]
    assert list(t2.index) == list(paper["table2_prompt_modules"]["rows"])
    assert t2.loc["0-0-0", "status"] == "done" and t2.loc["0-0-0", "IoU diff"] == pytest.approx(55.0 - 65.31)
    assert t2.loc["1-1-1", "status"] == "not run yet" and t2.loc["1-1-1", "IoU paper"] == 70.87
    assert t["Table 3, IRSTD-1K"].loc["4", "status"] == "queued"
    assert set(t["Table 2, NUDT-SIRST"]["status"]) == {"not run yet"}   # those runs were on IRSTD-1K


def test_tables_mean_and_std_over_seeds():
    "A preset run with seeds: its row holds the mean, the sample std and n; markdown writes mean ± std."
    from dataclasses import replace
    from dgspnet.experiments import markdown_table, table1
    base = {r.name: r for r in runs_on("IRSTD-1K")}["table2-0-0-0"]
    seeded = [replace(base, name=f"table2-1-1-1-seed{s}", metrics={"IoU": v, "Pd": 90.0}, timestamp=str(s))
              for s, v in ((0, 70.0), (1, 72.0), (2, 77.0))]                  # mean 73, std sqrt(13)
    seeded.append(replace(base, name="table2-1-1-1-seed1", metrics={"IoU": 0.0}, timestamp="0"))  # older: ignored
    seeded.append(replace(base, name="table2-1-1-1-seed3", status="failed", metrics={}))          # failed: left out
    t = ablation_tables(seeded, read_paper_tables())["Table 2, IRSTD-1K"]
    row = t.loc["1-1-1"]
    assert (row["status"], row["n"], row["IoU"], row["Pd"], row["Pd std"]) == ("done", 3, 73.0, 90.0, 0.0)
    assert row["IoU std"] == pytest.approx(13 ** 0.5) and row["IoU diff"] == pytest.approx(73.0 - 70.87)
    md = [[v.strip() for v in l.strip("|").split("|")] for l in markdown_table(t).splitlines()]
    assert [r[:5] for r in md if r[0] == "1-1-1"] == [["1-1-1", "done", "73.00 ± 3.61", "70.87", "2.13"]]
    nuaa = [replace(base, name=f"paper-nuaa-sirst-seed{s}", params={"data": {"source": "data/NUAA-SIRST"}},
                    metrics={"IoU": v, "Pd": 97.0, "Fa": 9.0}) for s, v in ((0, 79.0), (1, 81.0))]
    t1 = table1(nuaa, read_paper_tables())
    assert (t1.loc["NUAA-SIRST", "n"], t1.loc["NUAA-SIRST", "IoU"]) == (2, 80.0)
    assert t1.loc["NUAA-SIRST", "IoU std"] == pytest.approx(2 ** 0.5) and t1.loc["IRSTD-1K", "status"] == "not run yet"


def test_ablation_report(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    show = tmp_path / "show.json"
    show.write_text(json.dumps([{**b, "experiments": b["experiments"]} for b in json.loads(FIXTURE.read_text())])
                    .replace("outputs/synthetic", "data/IRSTD-1K"))
    md = run_ablation_report(tmp_path / "out", exp_show_json=str(show)).read_text()
    rows = [[v.strip() for v in l.strip("|").split("|")] for l in md.splitlines() if l.startswith("|")]
    assert ["0-0-0", "done", "55.00", "65.31", "-10.31"] in [r[:5] for r in rows]
    assert ["4", "queued"] in [r[:2] for r in rows] and ["1-1-1", "not run yet"] in [r[:2] for r in rows]
    assert (tmp_path / "out" / "report.ipynb").exists()


def test_metric_keys_are_those_evaluate_writes():
    "The ablation table reads the keys the evaluate stage writes (a renamed key would leave every row empty)."
    from dgspnet.metrics import in_paper_units
    from dgspnet.experiments import METRIC_KEYS
    assert set(METRIC_KEYS.values()) == set(in_paper_units({"IoU": 0.5, "nIoU": 0.5, "Pd": 0.5, "Fa": 1.0}))
