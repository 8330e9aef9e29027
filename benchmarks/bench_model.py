"""CPU inference benchmark of DGSPNet (not a test).

Measures, on 256x256 inputs, in interleaved rounds within one process (so that load from other processes hits all
alike), the forward time per image at batch 1 and 4 (and 16 where said) of
  - `before_nchw`: with --baseline, the model of another checkout of this repository (its `dgspnet/` loaded as a
    second package), in NCHW as its load_trained built it, with the same weights; `before_channels_last` likewise,
  - `full`: the default paper-width model as evaluate and predict run it now (`prepare_for_inference`: BatchNorm
    folded into the convolutions, channels_last; also batch 16); `full_channels_last`: channels_last without the
    fold; `full_nchw`: neither,
  - `full_bf16`: `full` with `--precision bf16` (`prepare_for_inference(net, "bf16")`: the CLIP text tower's layers
    in bfloat16; also batch 16),
  - `no_language_branch`: the Table 2 baseline (no text encoder, plain CA and fusion), prepared the same way as
    `full` (folded, channels_last; also batch 16), the fair reference for the language branch's overhead,
  - `full_coarse_only_n0`: n_fine_tokens=0 (the text features are cached, no text encoder run), prepared the same way,
  - with --compile, `full_compiled` and `full_bf16_compiled`: torch.compile of `full` and `full_bf16` (their first
    calls, the compiles, are reported apart),
  - with --onnx, `onnx`: the ONNX graph of `dgspnet.export` run by onnxruntime (batch 1: the graph takes one frame);
the language branch's overhead (`full` and `full_bf16` against `no_language_branch`) at batch 1, 4 and 16, since
the text pass costs nearly the same per batch whatever its size; then a profile of `full` at batch 4 per module
(pre-encoder, inversion, the prompt and its truncated CLIP pass, the re-encoder's convolutions and TGCA,
cross-attention, each decoder stage's lateral conv, upsampling, TGSA and conv block, the head): wall time per image
beside the module's FLOPs (results/model_profile.md); and the frozen CLIP text encoder alone on the 2-token prompts
over the full 77-token context, truncated, truncated with the causal prefix cache, and that in bfloat16. Writes
benchmarks/results/model_cpu.json and model_profile.md.

Run from the repository root:
  .venv/bin/python benchmarks/bench_model.py --baseline PATH_TO_AN_OLDER_CHECKOUT [--compile] [--onnx] [--threads 2]
"""

import argparse, copy, importlib.util, json, os, platform, statistics, sys, tempfile, time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from torch.utils.flop_counter import FlopCounterMode

from dgspnet.model import DGSPNet, count_flops
from dgspnet.text import TextEncoder, ClipWeightsMissing
from dgspnet.prompts import DualGranularityPrompt
from dgspnet.inference import prepare_for_inference, to_channels_last
from machine import cpu_model, load_note


def interleaved_times(fns: dict, repeats: int, warmup: int = 2) -> dict:
    "(wall, process CPU) times in s of each fn, in interleaved rounds so that load from other processes hits all alike."
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            ts[k].append((time.perf_counter() - t, time.process_time() - c))
    return ts


def summary(ts: list, per: int) -> dict:
    "Wall-clock median and minimum, and median process CPU time (all threads), in ms per item."
    wall, cpu = [w for w, _ in ts], [c for _, c in ts]
    return dict(
        median=round(1000 * statistics.median(wall) / per, 2),
        min=round(1000 * min(wall) / per, 2),
        cpu_median=round(1000 * statistics.median(cpu) / per, 2),
    )


def load_baseline(root: str):
    "The `dgspnet` package of another checkout (`root/dgspnet`), imported as `dgspnet_baseline`."
    spec = importlib.util.spec_from_file_location(
        "dgspnet_baseline",
        Path(root) / "dgspnet" / "__init__.py",
        submodule_search_locations=[str(Path(root) / "dgspnet")],
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dgspnet_baseline"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("dgspnet_baseline.model")


def time_models(fns: dict, size: int, repeats: int) -> dict:
    "Forward ms per image of each {name: (fn(x), batches)}, in interleaved rounds."
    xs = {b: torch.randn(b, 1, size, size) for _, bs in fns.values() for b in bs}
    calls = {(name, b): (lambda fn=fn, x=xs[b]: fn(x)) for name, (fn, bs) in fns.items() for b in bs}
    with torch.inference_mode():
        ts = interleaved_times(calls, repeats)
    res = defaultdict(dict)
    for (name, b), t in ts.items():
        res[name][f"b{b}"] = summary(t, b)
    return dict(res)


def compiled_model(model, size: int) -> tuple:
    "(torch.compile(model), seconds of its first call at batch 1 and at batch 4: the compiles)."
    cm, first = torch.compile(model), {}
    with torch.inference_mode():
        for b in (1, 4):
            t = time.perf_counter()
            cm(torch.randn(b, 1, size, size))
            first[f"b{b}"] = round(time.perf_counter() - t, 1)
    return cm, first


def onnx_runner(model, te):
    "fn(x [1,1,H,W]) running the ONNX export of `model` (`dgspnet.export`) with onnxruntime, and the file's size."
    import numpy as np
    from dgspnet.config import config_from_dict
    from dgspnet.checkpoint import Trained
    from dgspnet.export import export_onnx, OnnxNet

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(Trained(copy.deepcopy(model), config_from_dict({}), {"mean": 0.0, "std": 1.0}, {}), path)
    net = OnnxNet(path, threads=torch.get_num_threads())
    mb = round(path.stat().st_size / 2**20, 1)
    path.unlink()  # the session holds the graph; the file is a quarter of a gigabyte
    return (lambda x: net.session.run(None, {"image": x.numpy().astype(np.float32)})), mb


PROFILED = (
    "pre_encoder",
    "inversion",
    "prompt",
    "re_encoder.layers.{i}.convs",
    "re_encoder.layers.{i}.attn",
    "cross_attention",
    "decoder.stages.{i}.lateral",
    "decoder.stages.{i}.tgsa",
    "decoder.stages.{i}.conv",
    "decoder",
    "head",
)


def profile_modules(model, size: int, batch: int, repeats: int) -> dict:
    "{module: dict(ms_per_image, gflops_per_image)} of `model`'s parts (see PROFILED), timed by forward hooks."
    names = [n.format(i=i) for n in PROFILED for i in range(5)]
    mods = {n: m for n, m in model.named_modules() if n in names}
    wall = defaultdict(float)

    def hooks(name):
        def pre(m, args):
            m._bench_t0 = time.perf_counter()

        def post(m, args, out):
            wall[name] += time.perf_counter() - m._bench_t0

        return pre, post

    handles = []
    for n, m in mods.items():
        pre, post = hooks(n)
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    x = torch.randn(batch, 1, size, size)
    with torch.inference_mode():
        for _ in range(2):
            model(x)  # warm-up
        wall.clear()
        t = time.perf_counter()
        for _ in range(repeats):
            model(x)
        total = time.perf_counter() - t
        with FlopCounterMode(display=False) as fc:
            model(x)
    for h in handles:
        h.remove()
    counts = {k.split(".", 1)[1]: sum(v.values()) for k, v in fc.get_flop_counts().items() if "." in k}
    per = 1000 / (repeats * batch)
    out = {
        n: dict(ms_per_image=round(wall[n] * per, 2), gflops_per_image=round(counts.get(n, 0) / batch / 1e9, 4))
        for n in mods
    }
    inner = sum(out[n]["ms_per_image"] for n in mods if n.startswith("decoder.stages"))
    out["decoder (upsampling and the rest)"] = dict(
        ms_per_image=round(out["decoder"]["ms_per_image"] - inner, 2), gflops_per_image=0.0
    )
    out["total"] = dict(
        ms_per_image=round(total * per, 2), gflops_per_image=round(fc.get_total_flops() / batch / 1e9, 4)
    )
    return out


LANGUAGE = (
    "inversion",
    "prompt",
    "re_encoder.layers.0.attn",
    "re_encoder.layers.1.attn",
    "cross_attention",
    *(f"decoder.stages.{i}.tgsa" for i in range(5)),
)


def profile_markdown(prof: dict, load: tuple, threads: int, batch: int) -> str:
    "The profile as a markdown table: time and FLOPs per module and their shares, the language branch's rows marked."
    tot = prof["total"]
    lines = [
        f"## DGSPNet per-module profile (default widths, 256x256, batch {batch}, {threads} thread(s), channels_last)",
        "",
        "The model as evaluate and predict run it (`prepare_for_inference`, channels_last): every BatchNorm is "
        "folded into the convolution before it and replaced by an identity, so no BatchNorm pass is left to time; "
        "each convolution block in the pre-encoder, re-encoder convs and decoder conv rows is one convolution with a "
        "bias and its ReLU.",
        "",
        f"Load average after measuring: {load}.",
        "",
        "| module | language branch | ms/img | share of time | GFLOP/img | share of FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in prof.items():
        if n in ("total", "decoder"):
            continue
        lines.append(
            f"| {n} | {'yes' if n in LANGUAGE else ''} | {r['ms_per_image']:.2f} | "
            f"{r['ms_per_image'] / tot['ms_per_image']:.1%} | {r['gflops_per_image']:.4f} | "
            f"{r['gflops_per_image'] / tot['gflops_per_image']:.1%} |"
        )
    lang_t = sum(prof[n]["ms_per_image"] for n in LANGUAGE if n in prof)
    lang_f = sum(prof[n]["gflops_per_image"] for n in LANGUAGE if n in prof)
    lines += [
        f"| **language branch** | yes | {lang_t:.2f} | {lang_t / tot['ms_per_image']:.1%} | {lang_f:.4f} | "
        f"{lang_f / tot['gflops_per_image']:.1%} |",
        f"| **whole model** | | {tot['ms_per_image']:.2f} | 100% | {tot['gflops_per_image']:.4f} | 100% |",
        "",
        "The prompt row is the dual-granularity prompt with its truncated CLIP text pass (prefix cached); the "
        "re-encoder's attn rows are TGCA; FLOPs as torch counts them (convolutions, matrix products, attention).",
    ]
    return "\n".join(lines) + "\n"


def prefix_cache(te, on: bool, *args):
    "Run the text encoder `te(*args)` with its prefix cache switched on or off."
    before, te.prefix_cache = te.prefix_cache, on
    try:
        return te(*args)
    finally:
        te.prefix_cache = before


def time_text_encoder(te, te_bf16, repeats: int) -> dict:
    "The text encoder alone on 2-fine-token prompts: full 77-token context, truncated, + prefix cache, + bfloat16."
    prompt = DualGranularityPrompt(te, 2)
    fns, length, first = {}, {}, {}
    for b in (1, 4):
        ids, pos = map(torch.stack, zip(*(prompt.tokenize("") for _ in range(b))))
        fine = torch.randn(b, 2, te.width) * 0.02
        eot = ids.argmax(-1)
        length[b], first[b] = int(eot.max()) + 1, int(pos.min())
        fns[("full", b)] = lambda ids=ids, eot=eot, fine=fine, pos=pos: te.encode(
            ids[:, : te.context_length], eot, fine, pos
        )
        fns[("truncated", b)] = lambda ids=ids, fine=fine, pos=pos: prefix_cache(te, False, ids, fine, pos)
        fns[("prefix_cached", b)] = lambda ids=ids, fine=fine, pos=pos: prefix_cache(te, True, ids, fine, pos)
        fns[("prefix_cached_bf16", b)] = lambda ids=ids, fine=fine, pos=pos: prefix_cache(te_bf16, True, ids, fine, pos)
    with torch.inference_mode():
        ts = interleaved_times(fns, repeats)
    out = {}
    for b in (1, 4):
        full, trunc, pref, bf16 = (
            summary(ts[(k, b)], b) for k in ("full", "truncated", "prefix_cached", "prefix_cached_bf16")
        )
        out[f"b{b}"] = dict(
            context_full=te.context_length,
            context_truncated=length[b],
            positions_run_prefix_cached=length[b] - first[b],
            ms_per_prompt_full=full,
            ms_per_prompt_truncated=trunc,
            ms_per_prompt_prefix_cached=pref,
            ms_per_prompt_prefix_cached_bf16=bf16,
            speedup_median=round(full["median"] / trunc["median"], 2),
            speedup_median_prefix_cached_vs_truncated=round(trunc["median"] / pref["median"], 2),
            speedup_median_prefix_cached_vs_full=round(full["median"] / pref["median"], 2),
            speedup_median_bf16_vs_prefix_cached=round(pref["median"] / bf16["median"], 2),
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2", help="torch thread counts, comma separated (2: the target)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--baseline", default=None, help="another checkout of this repository: its model is timed too")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the full model")
    ap.add_argument("--onnx", action="store_true", help="also time the ONNX export with onnxruntime")
    ap.add_argument("--out", default="benchmarks/results/model_cpu.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()
    try:
        te, weights = TextEncoder("openai"), "openai"
    except ClipWeightsMissing:
        te, weights = TextEncoder("none"), "none"  # same architecture, same cost
    full = DGSPNet(text_encoder=te).freeze_inversion().eval()
    models = {
        "full_nchw": full,
        "full_channels_last": to_channels_last(copy.deepcopy(full)),
        "full": prepare_for_inference(copy.deepcopy(full)),
        "full_bf16": prepare_for_inference(copy.deepcopy(full), "bf16"),
        "no_language_branch": prepare_for_inference(DGSPNet(tgca=False, cross_attn=False, tgsa=False)),
        "full_coarse_only_n0": prepare_for_inference(DGSPNet(text_encoder=te, n_fine_tokens=0)),
    }
    batches = {k: (1, 4, 16) if k in ("full", "full_bf16", "no_language_branch") else (1, 4) for k in models}
    with torch.inference_mode():
        x = torch.randn(2, 1, a.size, a.size)
        check = {
            f"max_abs_logit_diff_{k}_vs_full_nchw": float((models[k](x) - full(x)).abs().max())
            for k in ("full", "full_bf16")
        }
    if a.baseline:
        old = load_baseline(a.baseline).DGSPNet(text_encoder=te).freeze_inversion().eval()
        old.load_state_dict(full.state_dict())
        models = {
            "before_nchw": old,
            "before_channels_last": copy.deepcopy(old).to(memory_format=torch.channels_last),
            **models,
        }
        batches.update(before_nchw=(1, 4), before_channels_last=(1, 4))
        with torch.inference_mode():
            x = torch.randn(2, 1, a.size, a.size)
            check["max_abs_logit_diff_full_vs_before_nchw"] = float((models["full"](x) - old(x)).abs().max())
    static = {}
    for name in ("full", "no_language_branch", "full_coarse_only_n0"):
        total, parts = count_flops(models[name], a.size, by_module=True)
        static[name] = dict(
            params=models[name].param_counts(),
            gflops_per_image=round(total / 1e9, 4),
            gflops_by_part={k: round(v / 1e9, 4) for k, v in parts.items()},
        )
    runs = {}
    for n in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(n)
        fns = {k: (m, batches[k]) for k, m in models.items()}
        extra = {}
        if a.compile:
            extra["compile_first_call_s"] = {}
            for k in ("full", "full_bf16"):
                cm, extra["compile_first_call_s"][k] = compiled_model(models[k], a.size)
                fns[f"{k}_compiled"] = (cm, (1, 4))
        if a.onnx:
            fn, extra["onnx_file_mib"] = onnx_runner(models["full"], te)
            fns["onnx"] = (fn, (1,))
        fwd = time_models(fns, a.size, a.repeats)
        text = time_text_encoder(te, models["full_bf16"].text_encoder, a.repeats)
        ratio = lambda x, y, b, stat="median": round(fwd[x][b][stat] / fwd[y][b][stat], 3)
        over = {
            k: {
                stat: {b: round(ratio(k, "no_language_branch", b, stat) - 1, 4) for b in ("b1", "b4", "b16")}
                for stat in ("min", "median", "cpu_median")
            }
            for k in ("full", "full_bf16")
        }
        speedup = {}
        if a.baseline:
            for k in [k for k in fwd if not k.startswith("before")]:
                speedup[k] = {b: ratio("before_nchw", k, b) for b in fwd[k] if b in fwd["before_nchw"]}
        prof = profile_modules(models["full"], a.size, 4, a.repeats)
        runs[f"threads_{n}"] = dict(
            forward_ms_per_image=fwd,
            speedup_over_before_nchw=speedup,
            **extra,
            language_branch_overhead=over,
            profile_full_b4=prof,
            text_encoder_alone=text,
            loadavg_after=[round(v, 2) for v in os.getloadavg()],
        )
        print(f"threads={n}", json.dumps(runs[f"threads_{n}"]), flush=True)
    out = dict(
        machine=dict(
            platform=platform.platform(),
            cpu=cpu_model(),
            cpu_count=os.cpu_count(),
            python=platform.python_version(),
            torch=torch.__version__,
            threads_measured=a.threads,
            loadavg_before=[round(v, 2) for v in load_before],
            note=load_note(load_before),
        ),
        setup=dict(
            input=f"1x{a.size}x{a.size}",
            mode="eval, torch.inference_mode, inversion net frozen",
            timing=(
                f"{a.repeats} runs per case in interleaved rounds after 2 warmup runs; "
                "per image: wall-clock median and min, "
                "median process CPU time (all threads)"
            ),
            baseline=a.baseline,
            clip_weights=weights,
            text_tower_random=te.text_tower_random,
            flops="torch.utils.flop_counter.FlopCounterMode at batch 1: 2 per multiply-accumulate; "
            "convs, matmuls, attention",
        ),
        check=check,
        models=static,
        runs=runs,
        target=dict(
            min_speedup_b4_over_before_nchw=2.5,
            max_language_branch_overhead_b4=0.35,
            met={
                k: dict(
                    speedup_b4={m: v["b4"] >= 2.5 for m, v in r["speedup_over_before_nchw"].items() if "b4" in v},
                    language_b4={m: o["median"]["b4"] <= 0.35 for m, o in r["language_branch_overhead"].items()},
                )
                for k, r in runs.items()
            },
        ),
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    Path(a.out).with_name("model_profile.md").write_text(
        "\n".join(
            profile_markdown(r["profile_full_b4"], r["loadavg_after"], int(k.split("_")[1]), 4) for k, r in runs.items()
        )
    )
    print("->", a.out)


if __name__ == "__main__":
    main()
