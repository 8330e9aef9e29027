"""bfloat16 against float32 inference with the reference model on NUAA-SIRST's test split (not a test).

The model is `models/nuaa-sirst-cpu-100.pt` (IoU 72.57 on this split in float32), run the way `dgspnet_evaluate`
runs it: loaded with `load_trained`, prepared with `prepare_for_inference` (BatchNorm folded, channels_last), the
test split of the prepared dataset (masks drawn at another scale resized, as the model card's evaluation), images
normalized with the model's own training statistics (normalization "model"), each test image predicted whole at
its own size, batch 1, by `predict_normalized`. Three variants, each its own loaded copy of the model, timed in
turn on every image (the order rotates from image to image) after one warm-up image:

- `fp32`: `prepare_for_inference(net, "fp32")`, what the pipeline runs;
- `bf16_text`: `prepare_for_inference(net, "bf16")`: the frozen CLIP text tower's 12 layers in bfloat16;
- `bf16_text_autocast`: that, and the whole network under `torch.autocast(dtype=torch.bfloat16)`.

For each: median ms per image, the four metrics at threshold 0.5 in the paper's units; against fp32: the largest
probability change (over all pixels, and the median over images of each image's largest) and the pixels whose mask
(probability > 0.5) flips. Writes benchmarks/results/bf16_nuaa.json.

Run from the repository root:  .venv/bin/python benchmarks/bf16_nuaa.py [--dataset PATH] [--threads 2]
"""

import argparse, json, os, statistics, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch

from dgspnet.checkpoint import load_trained
from dgspnet.data import IRSTDDataset, prepare_dataset
from dgspnet.metrics import in_paper_units
from dgspnet.inference import normalization_stats, predict_normalized, prepare_for_inference, scenes_of
from dgspnet.metrics import SegmentationMetrics
from machine import cpu_model, load_note

MODEL = "models/nuaa-sirst-cpu-100.pt"
VARIANTS = {"fp32": ("fp32", False), "bf16_text": ("bf16", False), "bf16_text_autocast": ("bf16", True)}


def predict(net, item, autocast: bool) -> np.ndarray:
    "One test item's probability map, as `predict_split` computes it (under bfloat16 autocast when asked)."
    h, w = (int(v) for v in item["size"])
    scenes = scenes_of({"scene": [item.get("scene", "")]})
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return predict_normalized(net, item["image"][None, :, :h, :w], scenes)[0, 0].numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="data/NUAA-SIRST", help="the NUAA-SIRST folder (README, Datasets)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/bf16_nuaa.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    man = prepare_dataset(a.dataset, Path(tempfile.mkdtemp()) / "prep", resize_masks=True)
    nets = {}
    for k, (precision, _) in VARIANTS.items():
        trained = load_trained(MODEL)
        nets[k] = prepare_for_inference(trained.net, precision)
    ds = IRSTDDataset(man, "test", train=False)
    ds.stats = normalization_stats("model", trained.stats, ds.stats)
    for k, (_, autocast) in VARIANTS.items():  # warm-up
        predict(nets[k], ds[0], autocast)
    names = list(VARIANTS)
    mets = {k: SegmentationMetrics(threshold=0.5) for k in names}
    times, diffs = {k: [] for k in names}, {k: [] for k in names[1:]}
    flipped, pixels = dict.fromkeys(names[1:], 0), 0
    for i in range(len(ds)):
        item = ds[i]
        h, w = (int(v) for v in item["size"])
        gt = item["mask"][0, :h, :w].numpy() > 0.5
        probs = {}
        for k in names[i % 3 :] + names[: i % 3]:
            t = time.perf_counter()
            probs[k] = predict(nets[k], item, VARIANTS[k][1])
            times[k].append(time.perf_counter() - t)
            mets[k].update(probs[k], gt)
        for k in names[1:]:
            diffs[k].append(float(np.abs(probs[k] - probs["fp32"]).max()))
            flipped[k] += int(((probs[k] > 0.5) != (probs["fp32"] > 0.5)).sum())
        pixels += h * w
    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    out = dict(
        machine=dict(
            cpu=cpu_model(),
            torch=torch.__version__,
            threads=a.threads,
            loadavg_before=[round(v, 2) for v in load_before],
            loadavg_after=[round(v, 2) for v in os.getloadavg()],
            note=load_note(load_before),
        ),
        model=MODEL,
        dataset=dict(path=a.dataset, split="test", images=len(ds), normalization="model", threshold=0.5),
        variants={
            k: f"prepare_for_inference(net, {p!r}){', bfloat16 autocast' if ac else ''}"
            for k, (p, ac) in VARIANTS.items()
        },
        ms_per_image_median={k: round(v, 2) for k, v in ms.items()},
        speedup_vs_fp32={k: round(ms["fp32"] / v, 3) for k, v in ms.items()},
        metrics={k: {m: round(v, 4) for m, v in in_paper_units(mets[k].compute()).items()} for k in names},
        max_abs_prob_diff_vs_fp32={
            k: dict(max=round(max(v), 5), median_over_images=round(statistics.median(v), 5)) for k, v in diffs.items()
        },
        pixels_whose_mask_flips_vs_fp32={k: dict(count=n, fraction=n / pixels) for k, n in flipped.items()},
    )
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
