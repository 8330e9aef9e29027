"""Two kernels behind the inference choices of dgspnet, timed alone on this CPU (not a test).

- Global max pooling of the channel attention (Eq. 1) on a channels_last batch of 4 at each encoder layer's shape:
  `amax` over H, W (what training uses) against `F.adaptive_max_pool2d(f, 1)` (what inference uses; the same values).
- One linear layer of the CLIP text tower's MLP (512 -> 2048) on the ~24 rows a batch of 4 prompts sends through the
  truncated, prefix-cached text pass, and on more rows: float32 against bfloat16 weights and input (`--precision bf16`).

Median of 15 runs after 2 warm-ups. Writes benchmarks/results/kernels.json.

Run from the repository root:  .venv/bin/python benchmarks/kernels.py [--threads 2]
"""

import argparse, json, os, statistics, time
from pathlib import Path

import torch
import torch.nn.functional as F

from machine import cpu_model, load_note


def median_ms(fn, repeats: int = 15) -> float:
    "Median wall time of `fn()` in ms, after 2 warm-up calls."
    fn(), fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return round(1000 * statistics.median(ts), 3)


def pooling() -> dict:
    "ms of amax and adaptive_max_pool2d at the encoder layers' shapes (batch 4, 256x256 input), and their equality."
    out = {}
    for c, h in ((16, 256), (32, 128), (64, 64), (128, 32), (256, 16)):
        f = torch.randn(4, c, h, h).contiguous(memory_format=torch.channels_last)
        same = torch.equal(f.amax((2, 3), keepdim=True), F.adaptive_max_pool2d(f, 1))
        out[f"4x{c}x{h}x{h}"] = dict(
            amax_ms=median_ms(lambda: f.amax((2, 3), keepdim=True)),
            adaptive_max_pool2d_ms=median_ms(lambda: F.adaptive_max_pool2d(f, 1)),
            equal=same,
        )
    return out


def linear() -> dict:
    "GFLOP/s of a 512 -> 2048 linear in float32 and bfloat16 for several row counts."
    w = torch.randn(2048, 512)
    out = {}
    for rows in (24, 96, 384):
        x = torch.randn(rows, 512)
        res = {}
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            xd, wd = x.to(dt), w.to(dt)
            ms = median_ms(lambda: F.linear(xd, wd))
            res[name] = dict(ms=ms, gflops_per_s=round(2 * rows * w.numel() / ms / 1e6, 1))
        out[f"{rows}_rows"] = res
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/kernels.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load = [round(v, 2) for v in os.getloadavg()]
    res = dict(
        machine=dict(
            cpu=cpu_model(), torch=torch.__version__, threads=a.threads, loadavg_before=load, note=load_note(load)
        ),
        global_max_pool=pooling(),
        text_linear_512_to_2048=linear(),
    )
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
