"""Integration tests of the DVC pipeline and the training stage (PIPELINE).

Each test runs the real console scripts in a subprocess on a tiny configuration (32x32 synthetic images,
widths 4..64, random CLIP text tower: no CLIP weights exist in the test environment).
"""
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "base": {"seed": 0, "device": "cpu", "threads": 1, "nproc": 1, "deterministic": True},
    "data": {"source": "outputs/synthetic", "skip_bad": False, "resize_masks": False, "splits": None, "crop": 32, "num_workers": 0,
             "synthetic": {"n_train": 8, "n_test": 4, "size": 32, "seed": 0}},
    "model": {"widths": [4, 8, 16, 32, 64], "n_fine_tokens": 2, "tgca": True, "cross_attn": True, "tgsa": True,
              "clip_weights": "none", "extra": {}},
    "pretrain": {"epochs": 1, "batch_size": 4, "ckpt_every": 1},
    "train": {"epochs": 2, "batch_size": 4, "ckpt_every": 1, "eval_every": 1},
    "evaluate": {"threshold": 0.5, "curve_points": 5, "gallery": 1, "attention_images": 1},
}


def env():
    e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    e.pop("WORLD_SIZE", None); e.pop("LOCAL_RANK", None); e.pop("RANK", None)
    return e


def run(cmd, cwd, check=True, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                       shell=isinstance(cmd, str))
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def params(**groups):
    "TINY with some groups updated: params(train={'epochs': 3})."
    p = json.loads(json.dumps(TINY))
    for g, d in groups.items(): p[g].update(d)
    return p


def copy_repo(dst: Path, p: dict) -> Path:
    "Tracked + untracked (not ignored) files of the repository into `dst`, as a fresh git repo with params `p`."
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    (dst / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for c in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"],
              ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        run(c, dst)
    return dst


@pytest.fixture(scope="module")
def repro_repo(tmp_path_factory):
    "A copy of the repository where `dvc repro` has run once on the tiny params."
    repo = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    r = run([str(BIN / "dvc"), "repro"], repo, timeout=600)
    return repo, r


def test_dvc_repro_end_to_end(repro_repo):
    repo, r = repro_repo
    for stage in ("synthetic", "prepare", "pretrain", "train", "evaluate"):
        assert f"Running stage '{stage}'" in r.stdout, r.stdout
    m = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert {"IoU_pct", "nIoU_pct", "Pd_pct", "Fa_1e-6"} <= set(m) and m["text_tower_random"] is True
    assert (repo / "results/evaluate/report.ipynb").exists()
    for png in ("pdfa.png", "gallery.png", "attention.png"):
        assert (repo / "results/evaluate" / png).stat().st_size > 0
    assert "[RANDOM_TEXT_TOWER]" in (repo / "outputs/train/run.log").read_text()
    assert json.loads((repo / "results/train/metrics.json").read_text())["text_tower_random"] is True
    # nothing to do the second time
    again = run([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout, again.stdout
    # dvc metrics show prints the four metrics in the paper's units, within a 120-column terminal
    show = run([str(BIN / "dvc"), "metrics", "show"], repo).stdout
    for k in ("IoU_pct", "nIoU_pct", "Pd_pct", "Fa_1e-6"): assert k in show.split(), show
    assert max(map(len, show.splitlines())) <= 120, show
    # an experiment with one changed param, then metrics diff against the committed run
    run("git add -A && git commit -qm 'tiny run'", repo)
    run([str(BIN / "dvc"), "exp", "run", "-S", "train.epochs=3"], repo, timeout=600)
    diff = run([str(BIN / "dvc"), "metrics", "diff", "--all"], repo).stdout
    assert "results/evaluate/metrics.json" in diff and "IoU_pct" in diff, diff
    pdiff = run([str(BIN / "dvc"), "params", "diff"], repo).stdout
    assert re.search(r"train\.epochs\s+2\s+3", pdiff), pdiff


def stage_cmds(d: Path, p: dict, pretrain=True):
    "Run the stages by their console scripts in folder `d` (no DVC); returns the train command."
    d.mkdir(parents=True, exist_ok=True)
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    from dgspnet.config import load_params
    from dgspnet.synthetic import make_synthetic_dataset  # in-process: the dvc test runs the CLIs
    from dgspnet.data import prepare_dataset
    s = load_params(d / "params.yaml").data.synthetic
    make_synthetic_dataset(d / "outputs/synthetic", n_train=s.n_train, n_test=s.n_test, size=s.size, seed=s.seed)
    prepare_dataset(d / "outputs/synthetic", d / "outputs/prepare")
    if pretrain:
        run(["dgspnet_pretrain", "--params", "params.yaml", "--manifest", "outputs/prepare/manifest.json"], d)
    return ["dgspnet_train", "--params", "params.yaml", "--manifest", "outputs/prepare/manifest.json"]


def weights(d: Path) -> dict:
    return torch.load(d / "outputs/train/model.pt", weights_only=True)["state"]


def checkpoints(d: Path) -> list:
    "The resumable checkpoints in the default checkpoint folder of `d`."
    return sorted((d / "outputs/checkpoints").glob("*.pt"))


RESUME = params(data={"synthetic": {"n_train": 16, "n_test": 4, "size": 32, "seed": 0}},
                train={"epochs": 6, "ckpt_every": 1, "eval_every": 3})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    "An uninterrupted run of RESUME (pretrain + train + evaluate) in a plain folder."
    d = tmp_path_factory.mktemp("ref")
    cmd = stage_cmds(d, RESUME)
    run(cmd, d)
    run(["dgspnet_evaluate", "--out", "results/evaluate"], d)
    return d


def test_same_seed_same_metrics(reference_run, tmp_path):
    d = tmp_path / "again"
    run(stage_cmds(d, RESUME), d)
    run(["dgspnet_evaluate", "--out", "results/evaluate"], d)
    a = json.loads((reference_run / "results/evaluate/metrics.json").read_text())
    b = json.loads((d / "results/evaluate/metrics.json").read_text())
    assert a == b
    wa, wb = weights(reference_run), weights(d)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (json.loads((reference_run / "results/train/metrics.json").read_text())
            == json.loads((d / "results/train/metrics.json").read_text()))


def test_kill_and_resume(reference_run, tmp_path):
    d = tmp_path / "killed"
    cmd = stage_cmds(d, RESUME)
    log = d / "outputs/train/run.log"
    proc = subprocess.Popen(cmd, cwd=d, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "checkpoint saved at epoch 2" in log.read_text(): break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL); proc.wait()
    ck, = checkpoints(d)  # the run's own: train-<params+data fingerprint>.pt
    done = int(torch.load(ck, weights_only=True)["epoch"])
    assert 0 < done < 6
    r = run(cmd, d)
    m = re.search(r"resuming from checkpoint \S+ at epoch (\d+)", r.stderr)
    assert m and int(m.group(1)) == done > 0, r.stderr[-3000:]
    assert "train epoch 6/6" in r.stderr
    # the resumed run ends exactly where the uninterrupted one did
    wa, wb = weights(reference_run), weights(d)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lines = (d / "results/train/plots/metrics/train/loss.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("step")
    steps = [l.split("\t")[col] for l in lines[1:]]
    assert steps == [str(i) for i in range(1, 7)]  # every epoch logged once
    assert checkpoints(d) == []  # a finished run deletes its checkpoint


def test_other_run_between_pause_and_resume(reference_run, tmp_path):
    "Run A pauses, run B (other params) runs to its end in the same folders, A resumes and ends as an unpaused A."
    d = tmp_path / "aba"
    cmd = stage_cmds(d, RESUME)
    paused = json.loads(json.dumps(RESUME))
    paused["base"]["max_minutes"] = 1e-9  # stops after its first step
    (d / "params.yaml").write_text(yaml.safe_dump(paused))
    r = run(cmd, d, check=False)
    assert r.returncode == 75 and "train: paused at epoch 1/6, step 1 " in r.stderr, r.stderr[-3000:]
    ck_a, = checkpoints(d)
    a_bytes = ck_a.read_bytes()
    other = json.loads(json.dumps(RESUME))
    other["train"].update(epochs=2, lr=0.002)
    (d / "params.yaml").write_text(yaml.safe_dump(other))
    r = run(cmd, d)
    assert "resuming" not in r.stderr and "train epoch 2/2" in r.stderr, r.stderr[-3000:]
    assert checkpoints(d) == [ck_a] and ck_a.read_bytes() == a_bytes  # B deleted its own, left A's alone
    (d / "params.yaml").write_text(yaml.safe_dump(RESUME))
    r = run(cmd, d)
    assert f"resuming from checkpoint {ck_a.relative_to(d)} at epoch 0 step 1 of 6" in r.stderr, r.stderr[-3000:]
    wa, wb = weights(reference_run), weights(d)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert checkpoints(d) == []


def test_one_writer_per_output_folder(tmp_path):
    "A second dgspnet_train into the folders of a running one stops at once, naming it; the first ends normally."
    d = tmp_path / "two"
    p = json.loads(json.dumps(RESUME))
    p["train"].update(epochs=8, eval_every=0)
    cmd = stage_cmds(d, p)
    first = subprocess.Popen(cmd, cwd=d, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder = d / "outputs/train.lock.json"
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not holder.exists(): time.sleep(0.05)
    assert first.poll() is None and holder.exists(), "the first run did not take the lock"
    t0 = time.time()
    second = run(cmd, d, check=False)
    took = time.time() - t0
    last = second.stderr.strip().splitlines()[-1]
    assert second.returncode != 0 and "another run is writing into this folder" in last, second.stderr[-3000:]
    assert f"(pid {first.pid} on " in last and ", started " in last and str(d / "outputs/train") in last, last
    assert "epoch 1/" not in second.stderr, second.stderr[-3000:]
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and "train epoch 8/8" in err, err[-3000:]
    lines = (d / "results/train/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(lines) == 1 + 8  # every epoch logged once, by the first run only
    assert not holder.exists() and took < 120, took


def test_torchrun_two_processes_match_one(tmp_path):
    "Pretrain + train with 2 processes (global batch 4 = 2 x 2) ends where 1 process (batch 4) does."
    p = params(data={"synthetic": {"n_train": 8, "n_test": 2, "size": 32, "seed": 0}},
               pretrain={"epochs": 1}, train={"epochs": 2, "eval_every": 0})
    one, two = tmp_path / "one", tmp_path / "two"
    run(stage_cmds(one, p), one)
    p2 = json.loads(json.dumps(p)); p2["base"]["nproc"] = 2
    r = run(stage_cmds(two, p2), two)
    assert "[rank 1/2]" in r.stderr  # really ran two processes
    for stage in ("pretrain", "train"):  # epoch losses (averaged over ranks) agree
        a = json.loads((one / f"results/{stage}/metrics.json").read_text())[stage]
        b = json.loads((two / f"results/{stage}/metrics.json").read_text())[stage]
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-4 * max(1, abs(a[k])) for k in a), (a, b)
    wa, wb = weights(one), weights(two)
    assert set(wa) == set(wb)
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())
    # float reduction order only; Adam turns noise in near-zero gradients into steps of up to lr (3e-4, 1e-4)
    assert worst < 1e-3, worst


def test_bad_file_fails_at_prepare(tmp_path):
    from dgspnet.synthetic import make_synthetic_dataset
    bad = Path(make_synthetic_dataset(tmp_path / "bad_ds", n_train=4, n_test=2, size=32, seed=0))
    victim = sorted((bad / "images").iterdir())[1]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    repo = copy_repo(tmp_path / "repo", params(data={"source": str(bad)}))
    r = run([str(BIN / "dvc"), "repro"], repo, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert victim.name in out and "unreadable or corrupt image" in out, out[-3000:]
    assert "Running stage 'pretrain'" not in out and not (repo / "outputs/pretrain").exists()


def test_missing_clip_weights_fail_loudly(tmp_path):
    "clip_weights naming weights that are not there: the run stops with the TEXT module's error, never a random tower."
    p = params(model={"clip_weights": str(tmp_path / "no_such_clip.pt")}, train={"pretrained": False})
    cmd = stage_cmds(tmp_path, p, pretrain=False)
    r = run(cmd, tmp_path, check=False)
    assert r.returncode != 0 and "no_such_clip.pt" in r.stderr
    assert "epoch 1/" not in r.stderr and "RANDOM" not in r.stderr


def test_time_boxed_dvc_repro_resumes(tmp_path):
    "A stage that runs out of base.max_minutes exits 75 and DVC records nothing; repeating dvc repro ends as an unpaused run."
    ref = copy_repo(tmp_path / "ref", TINY)
    run([str(BIN / "dvc"), "repro", "train"], ref, timeout=600)
    repo = copy_repo(tmp_path / "repo", params(base={"max_minutes": 1e-9}))  # every run stops after its first step
    codes, lock = [], repo / "dvc.lock"
    train_entry = lambda: yaml.safe_load(lock.read_text())["stages"].get("train") if lock.exists() else None
    committed = train_entry()  # the baseline's (the repository commits its default run's dvc.lock)
    for _ in range(12):
        r = run([str(BIN / "dvc"), "repro", "train"], repo, check=False, timeout=600)
        codes.append(r.returncode)
        if r.returncode == 0: break
        out = r.stdout + r.stderr
        assert re.search(r"(pretrain|train): paused (at|after) epoch \d+/\d+.*run the same command to resume", out), out[-3000:]
        assert train_entry() == committed  # no half-trained stage recorded
    assert codes[-1] == 0 and len(codes) >= 4, codes  # pretraining 2 steps + training 4 steps, one per run
    wa, wb = weights(ref), weights(repo)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
