"""The Slurm job scripts (slurm/) on a real one-node Slurm cluster, and a two-node torchrun rendezvous on localhost.

test_requeued_job_resumes_exactly configures a Slurm cluster on this machine (slurm/localcluster.sh: slurmctld,
slurmd and munged, as root) and is skipped, with the reason, where Slurm or root is missing (CI); it takes about two
minutes. The other two need no Slurm (fake sbatch, scontrol and dvc commands; two torchrun launchers on localhost)
and take about half a minute each. Run only these tests, with what they print, by

    pytest -q -s tests/test_slurm.py
"""
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import BIN, ROOT, TINY, copy_repo, env, run, stage_cmds, weights  # noqa: E402

SLURM = ROOT / "slurm"


def tiny_params(**groups) -> dict:
    "params.yaml with TINY's values and then `groups` laid over it (every key the stages read is there)."
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    for g, d in [*TINY.items(), *groups.items()]: p[g].update(d)
    return p


def slurm_missing() -> str | None:
    "Why a Slurm cluster cannot be started here, or None."
    missing = [x for x in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(x)]
    if missing: return f"Slurm is not installed ({', '.join(missing)} missing: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0: return "starting slurmd needs root"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    "A one-node Slurm cluster on localhost; the environment its commands need."
    why = slurm_missing()
    if why: pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    r = subprocess.run(["bash", SLURM / "localcluster.sh", "start", d], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    yield dict(env(), SLURM_CONF=str(d / "slurm.conf"))
    subprocess.run(["bash", SLURM / "localcluster.sh", "stop", d])


def job_state(job: str, e: dict) -> tuple:
    "(state, reason, restarts) of a job, from scontrol."
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=e).stdout
    get = lambda k: (re.search(rf"\b{k}=(\S+)", out) or [None, None])[1]
    return get("JobState"), get("Reason"), int(get("Restarts") or 0)


def wait_done(job: str, e: dict, timeout=900) -> int:
    "Wait until `job` has ended; its number of restarts. A requeued job is given 10 minutes and started at once."
    deadline, restarts = time.time() + timeout, 0
    while time.time() < deadline:
        state, reason, restarts = job_state(job, e)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            assert state == "COMPLETED", (job, state, reason)
            return restarts
        if state == "PENDING" and reason == "BeginTime":  # Slurm holds a requeued job back for about two minutes
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now", "TimeLimit=10"], env=e)
        time.sleep(2)
    raise AssertionError(f"job {job} did not end in {timeout} s: {job_state(job, e)}")


def exp_results(repo: Path) -> dict:
    "Experiment name -> (its evaluate metrics, the md5 of its trained weights), from `dvc exp show` and its dvc.lock."
    show = json.loads(run([str(BIN / "dvc"), "exp", "show", "--json"], repo).stdout)
    out = {}
    for base in show:
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                m = ((rev.get("data") or {}).get("metrics") or {}).get("results/evaluate/metrics.json") or {}
                lock = yaml.safe_load(run(["git", "show", f"{rev['rev']}:dvc.lock"], repo).stdout)
                md5 = {o["path"]: o["md5"] for o in lock["stages"]["train"]["outs"]}["outputs/train/model.pt"]
                out[rev.get("name")] = (m.get("data"), md5)
    return out


def test_requeued_job_resumes_exactly(cluster, tmp_path):
    "A job whose time limit pauses it requeues itself, resumes, and ends with the metrics of an uninterrupted job."
    e = dict(cluster)
    p = tiny_params(data={"synthetic": {"n_train": 16, "n_test": 4, "size": 32, "seed": 0}},
                    train={"epochs": 80, "ckpt_every": 1, "eval_every": 0})
    repo = copy_repo(tmp_path / "repo", p)
    e["DGSPNET_CKPT_ROOT"] = str(tmp_path / "ckpt")
    sbatch = lambda *a: subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", *a], cwd=repo, env=e,
                                       capture_output=True, text=True, check=True).stdout.strip()
    # both jobs at once from one clone; the first gets 1 minute and its warning 45 s before the end
    paused = sbatch("--time=1", "--signal=B:USR1@45", "-o", "paused.out", str(SLURM / "exp.sbatch"), "-n", "paused")
    whole = sbatch("-o", "whole.out", str(SLURM / "exp.sbatch"), "-n", "whole")
    restarts = wait_done(paused, e)
    assert wait_done(whole, e) == 0
    log = (repo / "paused.out").read_text()
    print(f"job {paused} (restarts: {restarts}):\n" + "\n".join(
        l for l in log.splitlines()
        if re.search(r"exp\.sbatch|paused|resuming|nothing to train|pretrain epoch|CANCELLED|Ran experiment", l)))
    assert restarts == 1 and "time limit near: pausing" in log and "requeueing job" in log, log[-4000:]
    pause = re.search(r"\b(pretrain|train): paused (at|after) epoch (\d+)/\d+", log)  # the signal's time varies
    assert pause, log[-4000:]
    if pause[1] == "train":  # pretraining had finished: the requeued job writes encoder.pt without training again
        again = log[log.index("requeueing job"):]
        assert "pretrain: its last epoch is done: nothing to train" in again, again[-4000:]
        assert "pretrain epoch " not in again, again[-4000:]
    resumed = re.search(rf"\b{pause[1]}: resuming from checkpoint \S+ at epoch (\d+)", log[pause.end():])
    assert resumed, log[-4000:]
    done = int(pause[3]) - (pause[2] == "at")  # paused inside an epoch: that epoch is resumed at its step
    assert int(resumed[1]) == done, (pause[0], resumed[0])
    assert "Ran experiment(s): paused" in log
    assert not (tmp_path / "ckpt" / paused).exists()  # a finished job removes its checkpoints
    m = exp_results(repo)
    print("dvc exp show (metrics, md5 of outputs/train/model.pt):", {k: m.get(k) for k in ("paused", "whole")})
    assert m["paused"][0] and m["paused"] == m["whole"]  # the same metrics and the same weights, byte for byte


def fake_commands(d: Path, **scripts) -> dict:
    "An environment whose PATH finds the shell `scripts` (name -> body) in folder `d` first; $OUT is `d`."
    d.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (d / name).write_text("#!/bin/sh\n" + body)
        (d / name).chmod(0o755)
    return dict(env(), OUT=str(d), PATH=f"{d}{os.pathsep}{env()['PATH']}")


def job_torchrun(d: Path, port: int) -> list:
    "The DGSPNET_TORCHRUN that slurm/exp.sbatch exports in a 2-node job (on nodes localhost, vm2), as words."
    e = fake_commands(d, dvc='printf "%s" "$DGSPNET_TORCHRUN" > "$OUT/torchrun"\n',
                      scontrol='[ "$*" = "show hostnames localhost,vm2" ] && printf "localhost\\nvm2\\n"\n')
    e.update(SLURM_JOB_ID="7", SLURM_NNODES="2", SLURM_JOB_NODELIST="localhost,vm2", DGSPNET_RDZV_PORT=str(port),
             DGSPNET_CKPT_ROOT=str(d / "ckpt"))
    r = subprocess.run(["bash", SLURM / "exp.sbatch", "-n", "x"], cwd=ROOT, env=e, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return (d / "torchrun").read_text().split()


def test_two_node_rendezvous_step_matches_one_process(tmp_path):
    "The job script's torchrun on two 'nodes' (two launchers on localhost, gloo, c10d) trains one step as 1 process."
    p = tiny_params(data={"synthetic": {"n_train": 8, "n_test": 2, "size": 32, "seed": 0}},
                    train={"epochs": 1, "steps_per_epoch": 1, "eval_every": 0})
    one, two = tmp_path / "one", tmp_path / "two"
    run(stage_cmds(one, p), one)
    train = stage_cmds(two, p)
    port = 29400 + os.getpid() % 500
    words = job_torchrun(tmp_path / "job", port)
    assert words == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "python", "-m",
                     "torch.distributed.run", "--nnodes=2", "--rdzv_backend=c10d",
                     f"--rdzv_endpoint=localhost:{port}", "--rdzv_id=7"], words
    # srun starts one such torchrun per node; here node 0 is the stage relaunching itself with it, node 1 a second
    # launcher started by hand (the job's `python` is the environment's)
    rdzv = [sys.executable, *words[words.index("python") + 1:]]
    e0 = dict(env(), DGSPNET_TORCHRUN=" ".join(rdzv))
    node0 = subprocess.Popen(train, cwd=two, env=e0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node1 = subprocess.run([*rdzv, "--nproc_per_node=1", "--no-python", shutil.which(train[0], path=e0["PATH"]),
                            *train[1:]], cwd=two, env=env(), capture_output=True, text=True, timeout=300)
    out0 = node0.communicate(timeout=300)[0]
    assert node0.returncode == 0 and node1.returncode == 0, out0[-3000:] + node1.stderr[-3000:]
    assert "[rank 1/2]" in out0 + node1.stderr + node1.stdout
    a = json.loads((one / "results/train/metrics.json").read_text())["train"]
    b = json.loads((two / "results/train/metrics.json").read_text())["train"]  # the step's losses, mean over ranks
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-5 * max(1, abs(a[k])) for k in a), (a, b)
    wa, wb = weights(one), weights(two)
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())
    print(f"one training step, 2 nodes x 1 process vs 1 process: losses {b} vs {a}, largest weight difference "
          f"{worst:.2e} (lr {p['train']['lr']})")
    # Adam's first step is lr * g / (|g| + eps): float reduction order alone moves it by up to lr where |g| ~ eps,
    # while a different batch or an unsynchronised BatchNorm moves weights by ~lr everywhere
    assert worst < 0.1 * p["train"]["lr"], worst


def test_table_is_one_array_and_each_task_runs_its_row(tmp_path):
    "slurm/table.sh submits Table 2 x seeds as one array; array task i runs row i as PRESET-seedN (no Slurm needed)."
    e = fake_commands(tmp_path, sbatch='printf "%s\\n" "$@" > "$OUT/sbatch.args"\n'
                                       'printf "%s" "$DGSPNET_ARRAY" > "$OUT/array"\necho 123\n',
                      dvc='printf "%s\\n" "$@" > "$OUT/dvc.args"\n')
    sets = ["--set", "data.source=outputs/synthetic", "--set", "model.clip_weights=none"]
    r = subprocess.run(["bash", SLURM / "table.sh", "table2", "--seeds", "0", "1", "--at-once", "2", "--time=5",
                        "--", *sets], cwd=ROOT, env=e, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "123", r.stderr
    args = (tmp_path / "sbatch.args").read_text().splitlines()
    assert args[:4] == ["--parsable", "--job-name=dgspnet-table2", "--array=0-11%2", "--time=5"], args
    assert args[4:] == [str(SLURM / "exp.sbatch"), *sets], args
    rows = (tmp_path / "array").read_text().split()
    assert rows[:3] == ["table2-0-0-0:0", "table2-0-0-0:1", "table2-1-0-0:0"] and len(rows) == 12, rows
    # array task 3 of job 123, as Slurm would start it
    e.update(DGSPNET_ARRAY=" ".join(rows), SLURM_ARRAY_JOB_ID="123", SLURM_ARRAY_TASK_ID="3", SLURM_JOB_ID="127",
             DGSPNET_CKPT_ROOT=str(tmp_path / "ckpt"))
    r = subprocess.run(["bash", SLURM / "exp.sbatch", *sets], cwd=ROOT, env=e, capture_output=True, text=True)
    assert r.returncode == 0 and "experiment finished" in r.stdout, r.stdout + r.stderr
    dvc = (tmp_path / "dvc.args").read_text().splitlines()
    assert dvc[:6] == ["exp", "run", "--temp", "--force", "-n", "table2-1-0-0-seed1"], dvc
    assert {"base.seed=1", "data.source=outputs/synthetic", "model.tgca=true", "model.tgsa=false"} <= set(dvc), dvc
    assert f"checkpoints in {tmp_path / 'ckpt' / '123_3'}" in r.stdout
    assert not (tmp_path / "ckpt" / "123_3").exists()  # removed when the experiment succeeded
