"""bfloat16 against float32 inference on NUAA-SIRST's test split (not a test): speed and what it changes.

No trained weights are kept in this repository, so the model is trained here, briefly: DGSPNet with widths 8..128,
a random CLIP text tower and no head prior, `--steps` Adam steps (batch 4, 128x128 crops) on NUAA-SIRST's training
split (a model trained on synthetic images only predicts nothing on real frames, which would leave no metric to
compare). Its metrics are far below the paper's; what this measures is how far bfloat16 moves them and the
probabilities, and how fast it is. Each test image is predicted whole (its own size), in float32 and under bfloat16
autocast alternately, with the model in channels_last, normalised with the training split's statistics (its one mask
drawn at another scale resized, as `data.resize_masks`). Writes benchmarks/results/bf16_nuaa.json.

Run from the repository root:  .venv/bin/python benchmarks/bf16_nuaa.py [--dataset PATH] [--steps 300] [--threads 2]
"""

import argparse, json, os, statistics, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch

from dgspnet.config import config_from_dict
from dgspnet.checkpoint import build_model
from dgspnet.data import IRSTDDataset, prepare_dataset
from dgspnet.inference import predict_normalized, to_channels_last
from dgspnet.losses import SegmentationLoss
from dgspnet.metrics import SegmentationMetrics
from machine import cpu_model

THRESHOLDS = (0.5, 0.2, 0.1)  # 0.5 is the pipeline's; the briefly trained model's targets are fainter


def train_briefly(man: Path, steps: int):
    "A DGSPNet (widths 8..128, random text tower) trained `steps` Adam steps on the training split of `man`."
    ds = IRSTDDataset(man, "train", crop=128)
    # no head prior: the model marks targets within the few steps it gets
    cfg = {"widths": [8, 16, 32, 64, 128], "clip_weights": "none", "head_prior": None}
    net = build_model(config_from_dict({"model": cfg}))
    net = net.freeze_inversion().to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    loss_fn, g = SegmentationLoss(), torch.Generator().manual_seed(0)
    for step in range(steps):
        ds.epoch = step
        batch = [ds[int(i)] for i in torch.randint(len(ds), (4,), generator=g)]
        x, y = (torch.stack([b[k] for b in batch]) for k in ("image", "mask"))
        loss = loss_fn(net(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return to_channels_last(net), loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="data/NUAA-SIRST", help="the NUAA-SIRST folder (README, Datasets)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/bf16_nuaa.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    man = prepare_dataset(a.dataset, work / "prep", resize_masks=True)
    net, last_loss = train_briefly(man, a.steps)
    train_s = time.perf_counter() - t0
    ds = IRSTDDataset(man, "test", train=False)
    mets = {(k, t): SegmentationMetrics(threshold=t) for k in ("fp32", "bf16") for t in THRESHOLDS}
    times, diffs, flipped, pixels = {k: [] for k in ("fp32", "bf16")}, [], dict.fromkeys(THRESHOLDS, 0), 0
    for i in range(len(ds)):
        item = ds[i]
        h, w = (int(v) for v in item["size"])
        x, gt = item["image"][None, :, :h, :w], item["mask"][0, :h, :w].numpy() > 0.5
        probs = {}
        for k in ("fp32", "bf16"):
            t = time.perf_counter()
            probs[k] = predict_normalized(net, x, bf16=k == "bf16")[0, 0].numpy()
            times[k].append(time.perf_counter() - t)
            for t in THRESHOLDS:
                mets[(k, t)].update(probs[k], gt)
        diffs.append(float(np.abs(probs["bf16"] - probs["fp32"]).max()))
        for t in THRESHOLDS:
            flipped[t] += int(((probs["bf16"] > t) != (probs["fp32"] > t)).sum())
        pixels += h * w
    res = {f"{k}@{t}": {m: round(float(v), 4) for m, v in mets[(k, t)].compute().items()} for k, t in mets}
    out = dict(
        machine=dict(
            cpu=cpu_model(),
            torch=torch.__version__,
            threads=a.threads,
            loadavg_before=[round(v, 2) for v in load_before],
            loadavg_after=[round(v, 2) for v in os.getloadavg()],
            note="a shared machine: other processes ran beside (see the load averages)",
        ),
        model=dict(
            widths=[8, 16, 32, 64, 128],
            clip_weights="none",
            head_prior=None,
            trained_on="the dataset's training split, briefly",
            steps=a.steps,
            batch=4,
            crop=128,
            final_loss=round(last_loss, 4),
            train_seconds=round(train_s, 1),
        ),
        dataset=dict(path=a.dataset, split="test", images=len(ds)),
        metrics=res,
        ms_per_image_median={k: round(1000 * statistics.median(v), 2) for k, v in times.items()},
        speedup_median=round(statistics.median(times["fp32"]) / statistics.median(times["bf16"]), 3),
        max_abs_prob_diff=dict(max=round(max(diffs), 5), median_over_images=round(statistics.median(diffs), 5)),
        pixels_whose_mask_flips={str(t): dict(count=n, fraction=n / pixels) for t, n in flipped.items()},
    )
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
