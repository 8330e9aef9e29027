"""How fast DGSPNet learns per optimizer step on NUAA-SIRST: test IoU/nIoU/Pd/Fa after a fixed number of steps.

The recipe is the committed CPU run's (`results/nuaa-sirst-cpu`): widths 16..256, crop 256, batch 4, random CLIP
text tower, 3 epochs of reconstruction pretraining (AdamW 3e-4 / 1e-4, shared by every candidate: no candidate
changes the encoder or the inversion net), then Adam lr 1e-3 with polynomial decay (power 1.2) over that run's
2,120 steps (40 epochs x 53), BCE + SoftIoU, seed 0, the prediction head at PyTorch's default initialisation
(`model.head_prior: null`; `prior-data` is the model's default, 6.4e-4). Each candidate changes one switch (see
CANDIDATES); the test split (214 images, whole) is scored after 100, 200, 400 and 800 steps, and the training
SoftIoU is averaged per epoch (53 steps).

    python benchmarks/learning_speed.py                      # every candidate not yet measured
    python benchmarks/learning_speed.py --candidates pytorch-init prior-0.01
    python benchmarks/learning_speed.py --plot               # table + figure from the results so far

Results: one JSON per candidate in benchmarks/results/learning_speed/, the table in
benchmarks/results/learning_speed.md and the figure benchmarks/results/learning_speed.png (with the machine).
A candidate already measured is skipped, so the script can be stopped and rerun. This is a benchmark, not a test.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse, json, time
from pathlib import Path

import numpy as np
import torch

from dgspnet.runtime import seed_everything, set_threads
from dgspnet.config import config_from_dict
from dgspnet.data import IRSTDDataset, prepare_dataset, read_mask, resolve_layout, load_manifest
from dgspnet.distributed import DistInfo, make_loader
from dgspnet.losses import SegmentationLoss
from dgspnet.inference import test_metrics
from dgspnet.train import run_pretrain, train_model, train_optimizer, _train_step
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = {  # the committed CPU run (results/nuaa-sirst-cpu/params.yaml), head at PyTorch's default init
    "base": {"seed": 0, "threads": 1, "deterministic": True},
    "data": {"crop": 256, "resize_masks": True},
    "model": {"widths": [16, 32, 64, 128, 256], "n_fine_tokens": 2, "clip_weights": "none", "head_prior": None},
    "pretrain": {"epochs": 3, "batch_size": 4, "ckpt_every": 1},
    "train": {"epochs": 40, "batch_size": 4, "lr": 1e-3, "poly_power": 1.2},
}
CANDIDATES = {  # name -> overrides of the recipe ("data" in head_prior: the training split's target fraction)
    "pytorch-init": {},
    "prior-0.01": {"model": {"head_prior": 0.01}},
    "prior-data": {"model": {"head_prior": "data"}},  # the model's default (model.head_prior: 6.4e-4, rounded)
    "warmup": {"train": {"warmup_steps": 50}},
    "deep-supervision": {"model": {"deep_supervision": True}},
    "softmax_hw": {"model": {"tgsa_norm": "softmax_hw"}},
    "sigmoid": {"model": {"tgsa_norm": "sigmoid"}},
}
EVAL_AT = (100, 200, 400, 800)
DEFAULT = "prior-data"  # the candidate the model's defaults match


def merged(base: dict, over: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for k, v in over.items():
        out.setdefault(k, {}).update(v)
    return out


def target_fraction(manifest) -> float:
    "Fraction of target pixels over the training split's masks."
    m = load_manifest(manifest)
    folder = resolve_layout(m["root"])
    pos = tot = 0
    for n in m["train"]:
        msk = read_mask(folder.paths(n)[1])
        pos += int(msk.sum())
        tot += msk.size
    return pos / tot


def run_candidate(name: str, manifest: Path, encoder: Path, prior_data: float, steps: int, threads: int) -> dict:
    over = CANDIDATES[name]
    if over.get("model", {}).get("head_prior") == "data":
        over = merged(over, {"model": {"head_prior": round(prior_data, 6)}})
    cfg = config_from_dict(merged(RECIPE, over))
    set_threads(threads)
    seed_everything(cfg.base.seed, cfg.base.deterministic)
    train_ds = IRSTDDataset(manifest, "train", crop=cfg.data.crop, train=True, seed=cfg.base.seed)
    test_ds = IRSTDDataset(manifest, "test", train=False)
    net = train_model(cfg, encoder)
    per_epoch = len(train_ds) // cfg.train.batch_size
    opt, sched = train_optimizer(net, cfg, cfg.train.epochs * per_epoch)
    step_fn = _train_step(
        SegmentationLoss(cfg.train.lambda_bce, cfg.train.lambda_softiou),
        cfg.train.aux_weight if cfg.model.deep_supervision else 0.0,
    )
    rec = dict(
        candidate=name, overrides=over, steps_per_epoch=per_epoch, evals={}, softiou_per_epoch=[], loss_per_epoch=[]
    )
    step, t0, epoch = 0, time.time(), 0
    while step < steps:
        seed_everything(cfg.base.seed * 1000003 + epoch * 101, cfg.base.deterministic)  # as the training stage does
        siou, loss = [], []
        for batch in make_loader(train_ds, cfg.train.batch_size, DistInfo(), cfg.base.seed, epoch):
            net.train()
            out = step_fn(net, batch)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
            step += 1
            siou.append(float(out["softiou"].detach()))
            loss.append(float(out["loss"].detach()))
            if step in EVAL_AT:
                met = {k: float(v) for k, v in test_metrics(net, test_ds, cfg.evaluate.threshold).items()}
                rec["evals"][str(step)] = met
                print(
                    f"{name}: step {step} ({time.time() - t0:.0f} s) "
                    f"IoU {100 * met['IoU']:.2f} nIoU {100 * met['nIoU']:.2f} "
                    f"Pd {100 * met['Pd']:.2f} Fa {met['Fa']:.1f}",
                    flush=True,
                )
            if step >= steps:
                break
        rec["softiou_per_epoch"].append(float(np.mean(siou)))
        rec["loss_per_epoch"].append(float(np.mean(loss)))
        print(f"{name}: epoch {epoch + 1} mean train SoftIoU {rec['softiou_per_epoch'][-1]:.4f}", flush=True)
        epoch += 1
    rec.update(seconds=round(time.time() - t0, 1), threads=threads, machine=machine())
    return rec


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def plot(out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    order = [n for n in CANDIDATES if any(r["candidate"] == n for r in recs)]
    recs = sorted(recs, key=lambda r: order.index(r["candidate"]))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1], "wspace": 0.8})
    for r in recs:
        xs = sorted(int(s) for s in r["evals"])
        label = r["candidate"] + (" (the default)" if r["candidate"] == DEFAULT else "")
        a1.plot(xs, [100 * r["evals"][str(s)]["IoU"] for s in xs], marker="o", label=label)
        e = np.arange(1, len(r["softiou_per_epoch"]) + 1) * r["steps_per_epoch"]
        a2.plot(e, r["softiou_per_epoch"], marker=".", label=label)
    a1.axhline(44.3, color="grey", ls="--", lw=1)
    a1.text(100, 45.3, "SCTransNet with this pipeline, 397 steps", fontsize=7, color="grey")
    a1.set(
        xlabel="optimizer steps",
        ylabel="test IoU (%)",
        title="NUAA-SIRST test IoU after a fixed number of steps",
        xscale="log",
    )
    a1.set_xticks(EVAL_AT, [str(s) for s in EVAL_AT])
    a1.minorticks_off()
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    a2.axhline(0.9, color="grey", ls="--", lw=1)
    a2.set(
        xlabel="optimizer steps (end of epoch)", ylabel="mean training SoftIoU loss per epoch", title="training SoftIoU"
    )
    a2.grid(alpha=0.3)
    fig.suptitle(
        f"recipe of results/nuaa-sirst-cpu (random text tower), seed 0; {recs[0]['machine'] if recs else ''}",
        fontsize=8,
    )
    fig.savefig(RESULTS / "learning_speed.png", dpi=110, bbox_inches="tight")
    rows = [
        "| candidate | " + " | ".join(f"IoU @{s}" for s in EVAL_AT) + " | nIoU / Pd / Fa @400 | nIoU / Pd / Fa @800 | "
        "train SoftIoU, epochs 1-3 | wall time |",
        "|---" * 9 + "|",
    ]
    for r in recs:
        ev = r["evals"]
        f = lambda s: f"{100 * ev[str(s)]['IoU']:.2f}" if str(s) in ev else "—"
        g = lambda s: (
            f"{100 * ev[str(s)]['nIoU']:.1f} / {100 * ev[str(s)]['Pd']:.1f} / {ev[str(s)]['Fa']:.1f}"
            if str(s) in ev
            else "—"
        )
        rows.append(
            f"| {r['candidate']} | "
            + " | ".join(f(s) for s in EVAL_AT)
            + f" | {g(400)} | {g(800)} | "
            + ", ".join(f"{v:.3f}" for v in r["softiou_per_epoch"][:3])
            + f" | {r['seconds'] / 60:.0f} min ({r['threads']} thread) |"
        )
    (RESULTS / "learning_speed.md").write_text(
        "# Learning speed per optimizer step, NUAA-SIRST (CPU)\n\nMade by `python benchmarks/learning_speed.py` "
        "(recipe and candidates in its docstring); test IoU in %, Fa in 1e-6; "
        "the training SoftIoU is the mean over each "
        f"epoch of 53 steps.\n\nMachine: {recs[0]['machine'] if recs else '?'}\n\n" + "\n".join(rows) + "\n"
    )
    print("\n".join(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "NUAA-SIRST"), help="NUAA-SIRST's folder (README: Datasets)")
    ap.add_argument("--work", default=str(ROOT / "outputs" / "learning_speed"), help="manifest and pretrained weights")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--steps", type=int, default=max(EVAL_AT))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", action="store_true", help="only write the table and figure from the results so far")
    a = ap.parse_args()
    out_dir = RESULTS / "learning_speed"
    out_dir.mkdir(parents=True, exist_ok=True)
    if a.plot:
        return plot(out_dir)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "prepare" / "manifest.json"
    if not manifest.exists():
        prepare_dataset(a.data, work / "prepare", resize_masks=True)
    encoder = work / "pretrain" / "encoder.pt"
    if not encoder.exists():
        cfg = config_from_dict(merged(RECIPE, {"base": {"threads": a.threads}}))
        run_pretrain(cfg, manifest, work / "pretrain", work / "ckpt", work / "live_pretrain")
    prior_data = target_fraction(manifest)
    print(f"training split target fraction: {prior_data:.3e}", flush=True)
    for name in a.candidates:
        path = out_dir / f"{name}.json"
        if path.exists():
            print(f"{name}: measured already ({path})")
            continue
        rec = run_candidate(name, manifest, encoder, prior_data, a.steps, a.threads)
        rec["target_fraction"] = prior_data
        path.write_text(json.dumps(rec, indent=2) + "\n")
    plot(out_dir)


if __name__ == "__main__":
    main()
