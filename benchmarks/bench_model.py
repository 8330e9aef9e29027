"""CPU forward-time benchmark of DGSPNet (not a test).

Measures, on 256x256 inputs, the forward time per image at batch 1 and 4 of
  - the full model (default widths 16..256, 2 fine tokens, TGCA + cross-attention + TGSA),
  - the same model with the language branch removed (Table 2 baseline: U-Net with CA, no text encoder),
  - the full model with n_fine_tokens=0 (coarse-only prompt: the text features are cached, no text encoder run),
and the frozen CLIP text encoder alone on the 2-token prompts: over the full 77-token context, truncated to the
longest prompt (plain path, `prefix_cache=False`), and truncated with the causal prefix cache (what the model does:
the shared prompt prefix's keys/values are cached, only the positions from the first fine token on are run). Also parameter counts and FLOPs. Writes benchmarks/results/model_cpu.json.

Run from the repository root:  .venv/bin/python benchmarks/bench_model.py [--threads 2,1] [--repeats 7]
(2 threads is the target setting; 1 thread is also measured because it stays meaningful on a loaded machine)
"""
import argparse, json, os, platform, statistics, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

from dgspnet.model import DGSPNet, count_flops
from dgspnet.text import TextEncoder, ClipWeightsMissing
from dgspnet.prompts import DualGranularityPrompt
from machine import cpu_model

def interleaved_times(fns:dict, repeats:int, warmup:int=2) -> dict:
    "(wall, process CPU) times in s of each fn, run in interleaved rounds so that load from other processes hits all alike."
    for fn in fns.values():
        for _ in range(warmup): fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time(); fn()
            ts[k].append((time.perf_counter() - t, time.process_time() - c))
    return ts

def summary(ts:list, per:int) -> dict:
    "Wall-clock median and minimum, and median process CPU time (all threads), in ms per item."
    wall, cpu = [w for w, _ in ts], [c for _, c in ts]
    return dict(median=round(1000 * statistics.median(wall) / per, 2), min=round(1000 * min(wall) / per, 2),
                cpu_median=round(1000 * statistics.median(cpu) / per, 2))

def time_models(models:dict, size:int, repeats:int) -> dict:
    "Forward ms per image at batch 1 and 4, for each model."
    xs = {b: torch.randn(b, 1, size, size) for b in (1, 4)}
    fns = {(name, b): (lambda m=m, x=xs[b]: m(x)) for name, m in models.items() for b in (1, 4)}
    with torch.inference_mode():
        ts = interleaved_times(fns, repeats)
    res = {name: {} for name in models}
    for (name, b), t in ts.items(): res[name][f"b{b}"] = summary(t, b)
    return res

def prefix_cache(te, on:bool, *args):
    "Run the text encoder `te(*args)` with its prefix cache switched on or off."
    before, te.prefix_cache = te.prefix_cache, on
    try: return te(*args)
    finally: te.prefix_cache = before

def time_text_encoder(te, repeats:int) -> dict:
    "The text encoder alone on 2-fine-token prompts: full 77-token context vs truncated vs truncated + prefix cache."
    prompt = DualGranularityPrompt(te, 2)
    fns, length, first = {}, {}, {}
    for b in (1, 4):
        ids, pos = map(torch.stack, zip(*(prompt.tokenize("") for _ in range(b))))
        fine = torch.randn(b, 2, te.width) * 0.02
        eot = ids.argmax(-1)
        length[b], first[b] = int(eot.max()) + 1, int(pos.min())
        fns[("full", b)] = lambda ids=ids, eot=eot, fine=fine, pos=pos: te.encode(ids[:, :te.context_length], eot, fine, pos)
        fns[("truncated", b)] = lambda ids=ids, fine=fine, pos=pos: prefix_cache(te, False, ids, fine, pos)
        fns[("prefix_cached", b)] = lambda ids=ids, fine=fine, pos=pos: prefix_cache(te, True, ids, fine, pos)
    with torch.inference_mode():
        ts = interleaved_times(fns, repeats)
    out = {}
    for b in (1, 4):
        full, trunc, pref = (summary(ts[(k, b)], b) for k in ("full", "truncated", "prefix_cached"))
        out[f"b{b}"] = dict(context_full=te.context_length, context_truncated=length[b],
                            positions_run_prefix_cached=length[b] - first[b],
                            ms_per_prompt_full=full, ms_per_prompt_truncated=trunc, ms_per_prompt_prefix_cached=pref,
                            speedup_median=round(full["median"] / trunc["median"], 2),
                            speedup_median_prefix_cached_vs_truncated=round(trunc["median"] / pref["median"], 2),
                            speedup_median_prefix_cached_vs_full=round(full["median"] / pref["median"], 2))
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1", help="torch thread counts to measure with, comma separated (2: the target)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default="benchmarks/results/model_cpu.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()
    try: te, weights = TextEncoder("openai"), "openai"
    except ClipWeightsMissing: te, weights = TextEncoder("none"), "none"  # same architecture, same cost
    models = {
        "full": DGSPNet(text_encoder=te).freeze_inversion().eval(),
        "no_language_branch": DGSPNet(tgca=False, cross_attn=False, tgsa=False).eval(),
        "full_coarse_only_n0": DGSPNet(text_encoder=te, n_fine_tokens=0).eval(),
    }
    static = {}
    for name, m in models.items():
        total, parts = count_flops(m, a.size, by_module=True)
        static[name] = dict(params=m.param_counts(), gflops_per_image=round(total / 1e9, 4),
                            gflops_by_part={k: round(v / 1e9, 4) for k, v in parts.items()})
    runs = {}
    for n in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(n)
        fwd, text = time_models(models, a.size, a.repeats), time_text_encoder(te, a.repeats)
        over = {stat: {b: round(fwd["full"][b][stat] / fwd["no_language_branch"][b][stat] - 1, 4) for b in ("b1", "b4")}
                for stat in ("min", "median", "cpu_median")}
        runs[f"threads_{n}"] = dict(forward_ms_per_image=fwd, text_encoder_alone=text,
                                    language_branch_overhead=over, loadavg_after=[round(v, 2) for v in os.getloadavg()])
        print(f"threads={n}", json.dumps(runs[f"threads_{n}"]), flush=True)
    out = dict(
        machine=dict(platform=platform.platform(), cpu=cpu_model(), cpu_count=os.cpu_count(), python=platform.python_version(),
                     torch=torch.__version__, threads_measured=a.threads, loadavg_before=[round(v, 2) for v in load_before]),
        setup=dict(input=f"1x{a.size}x{a.size}", mode="eval, torch.inference_mode, inversion net frozen",
                   timing=(f"{a.repeats} runs per case in interleaved rounds after 2 warmup runs; per image: wall-clock median and min, "
                           "median process CPU time (all threads). On a shared, loaded machine the 2-thread numbers suffer "
                           "from oversubscription (compare loadavg); the 1-thread numbers are the robust ones"),
                   clip_weights=weights, text_tower_random=te.text_tower_random,
                   flops="torch.utils.flop_counter.FlopCounterMode at batch 1: 2 per multiply-accumulate; convs, matmuls, attention"),
        models=static,
        runs=runs,
        target=dict(max_language_branch_overhead_b4=0.15,
                    met={k: r["language_branch_overhead"]["median"]["b4"] <= 0.15 for k, r in runs.items()}),
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("->", a.out)

if __name__ == "__main__":
    main()
