"""Each speed lever against the baseline, interleaved in one process (plain loop; Lightning adds nothing: see
bench_train.py).

    python bench/bench_levers.py                                  # 128x128 fp32: all levers
    python bench/bench_levers.py --precision bf16-mixed --levers base channels_last
    python bench/bench_levers.py --device cuda --size 256 --precision bf16-mixed

Levers (each the counterpart of a config switch): ``channels_last`` (model.channels_last), ``foreach`` /
``fused`` (model.adam_impl), ``compile`` (model.compile_generators: both generators, in place). One model per
lever, all starting from the same weights; round-robin base, lever1, lever2, ... per iteration; the figure is the
median over iterations of lever/base. Compile time (the first iterations) is reported separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose_cfg, load, machine, median, model_dict, preload, sync  # noqa: E402
from plain_loop import PlainCycleGAN  # noqa: E402

LEVERS = {
    "base": {},
    "channels_last": {"channels_last": True},
    "foreach": {"adam_impl": "foreach"},
    "fused": {"adam_impl": "fused"},
    "compile": {"compile_generators": True},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="per lever; compile needs >= 2 (forward, then backward)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 makes CPU-time ratios robust to load)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    levers = ["base"] + [x for x in args.levers if x != "base"]
    print(f"machine: {machine()}")
    print(
        f"bench: {args.size}x{args.size}, batch 1, {args.precision}, {args.warmup} warm-up + {args.iters} rounds; "
        f"{load()}"
    )
    cfg = compose_cfg(args.size, [], args.device)
    batches = preload(cfg, 8)
    models = {}
    for name in levers:
        torch.manual_seed(0)
        models[name] = PlainCycleGAN(model_dict(cfg), args.precision, **LEVERS[name]).to(args.device)
    times = {name: [] for name in levers}
    cpu = {name: [] for name in levers}  # process CPU time: robust to other users' load
    first = {name: [] for name in levers}
    for i in range(args.warmup + args.iters):
        b = batches[i % len(batches)]
        a_, b_ = b["a"].to(args.device), b["b"].to(args.device)
        for name in levers if i % 2 == 0 else levers[::-1]:  # alternate the order: no lever always runs first
            sync(args.device)
            t, c = time.perf_counter(), time.process_time()
            models[name].step(a_, b_)
            sync(args.device)
            (times if i >= args.warmup else first)[name].append(time.perf_counter() - t)
            if i >= args.warmup:
                cpu[name].append(time.process_time() - c)
        print(
            f"  round {i}: "
            + ", ".join(f"{n} {(times if i >= args.warmup else first)[n][-1]:.2f}s" for n in levers)
            + f"; {load()}",
            flush=True,
        )
    print(
        f"\n| lever ({args.precision}, {args.size}x{args.size}) | s/it (median) | vs base (median of rounds) | "
        f"CPU s/it | CPU vs base | first iterations s | load at end |\n|---|---|---|---|---|---|---|"
    )
    for name in levers:
        rel = median([t / b for t, b in zip(times[name], times["base"])])
        rel_cpu = median([t / b for t, b in zip(cpu[name], cpu["base"])])
        firsts = " + ".join(f"{x:.1f}" for x in first[name])
        print(
            f"| {name} | {median(times[name]):.3f} | {rel:.3f} | {median(cpu[name]):.3f} | {rel_cpu:.3f} | {firsts} "
            f"| {load()} |"
        )


if __name__ == "__main__":
    main()
