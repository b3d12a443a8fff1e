"""Is the data pipeline ever the bottleneck? Step time with the real DataLoader vs pre-loaded tensors.

    python bench/bench_data.py                       # 128x128, fp32, workers 0 and 2
    python bench/bench_data.py --workers 0 2 4 --precision bf16-mixed
    python bench/bench_data.py --throughput          # loading alone: per-sample seeds vs the process's RNG

One plain-loop model (bench/plain_loop.py; Lightning's own cost is bench_train.py's business) alternates
iterations A B A B: A fetches its batch from the real ``UnpairedDataModule.train_dataloader()`` (decode, resize,
random crop and flip in the configured workers, with pin_memory / persistent_workers as configured), B takes an
already decoded batch from memory. Both then run the same training iteration. The figure is the median of the
per-pair ratios A/B; the goal is <= 1.03. Worker processes keep prefetching during B, so their CPU use competes
with both contenders, as it does in a real run.

``--throughput`` times loading alone, whole epochs alternating A B A B: A is the training loader
(``SeededSampler``: every sample's draws seeded from (seed, epoch, rank, index)), B a plain shuffled DataLoader
over the same dataset whose samples draw from each worker's random state (how the reference, and this project
before exact resume, loaded). The figure is the median per-pair ratio of samples/s, A/B.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hydra
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose_cfg, load, machine, median, model_dict, preload, sync  # noqa: E402
from plain_loop import PlainCycleGAN  # noqa: E402


def throughput(args) -> None:
    from torch.utils.data import DataLoader

    print("\n| workers | seeded samples/s | process-RNG samples/s | ratio | load |\n|---|---|---|---|---|")
    for workers in args.workers:
        ov = [
            f"data.num_workers={workers}",
            "data.pin_memory=false",
            f"data.persistent_workers={str(workers > 0).lower()}",
        ]
        dm = hydra.utils.instantiate(compose_cfg(args.size, ov, "cpu").data)
        dm.prepare_data()
        dm.setup("fit")
        seeded = dm.train_dataloader()
        plain = DataLoader(
            dm.train_set,
            batch_size=seeded.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        rates: dict[str, list[float]] = {"seeded": [], "plain": []}
        for epoch in range(args.warmup + args.iters):
            seeded.sampler.set_epoch(epoch)
            pair = (("seeded", seeded), ("plain", plain))
            for name, loader in pair if epoch % 2 else pair[::-1]:  # each goes first in half the pairs
                t = time.perf_counter()
                n = sum(len(batch["a"]) for batch in loader)
                if epoch >= args.warmup:
                    rates[name].append(n / (time.perf_counter() - t))
        ratio = median([a / b for a, b in zip(rates["seeded"], rates["plain"])])
        if workers == 0:  # the same, one sample at a time in this process: the seeding's own cost, least noisy
            ds, keys = dm.train_set, list(seeded.sampler)
            per = {"seeded": [], "plain": []}
            for _ in range(args.iters):
                for name, get in (("seeded", lambda k: ds[k]), ("plain", lambda k: ds[k[0]])):
                    t = time.perf_counter()
                    for key in keys:
                        get(key)
                    per[name].append((time.perf_counter() - t) / len(keys) * 1e3)
            print(
                f"in-process, per sample: seeded {median(per['seeded']):.2f} ms, process RNG "
                f"{median(per['plain']):.2f} ms, ratio "
                f"{median([a / b for a, b in zip(per['seeded'], per['plain'])]):.3f}"
            )
        print(
            f"| {workers} | {median(rates['seeded']):.1f} | {median(rates['plain']):.1f} | {ratio:.3f} | {load()} |",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--pin-memory", action="store_true", help="pin_memory=True (only useful with a GPU)")
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--throughput", action="store_true", help="time loading alone, seeded vs process RNG (epochs)")
    args = p.parse_args()
    print(f"machine: {machine()}")
    if args.throughput:
        print(
            f"bench: loading alone, {args.size}x{args.size}, {args.warmup} warm-up + {args.iters} epoch pairs; {load()}"
        )
        return throughput(args)
    print(
        f"bench: {args.size}x{args.size}, batch 1, {args.precision}, {args.warmup} warm-up + {args.iters} pairs; "
        f"{load()}"
    )
    print(
        "\n| workers | pin_memory | persistent | fetch ms (real loader, alone) | real-loader s/it | pre-loaded s/it "
        "| ratio | load |\n|---|---|---|---|---|---|---|---|"
    )
    for workers in args.workers:
        ov = [
            f"data.num_workers={workers}",
            f"data.pin_memory={str(args.pin_memory).lower()}",
            f"data.persistent_workers={str(workers > 0).lower()}",
        ]
        cfg = compose_cfg(args.size, ov, args.device)
        dm = hydra.utils.instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        pre = preload(cfg, 8)
        plain = PlainCycleGAN(model_dict(cfg), args.precision).to(args.device)

        def real_batches():
            while True:  # epochs of the real loader, as a trainer would run them
                yield from dm.train_dataloader()

        real = real_batches()
        t0 = time.perf_counter()
        for _ in range(20):  # fetch cost alone (includes worker start-up on the first epoch)
            next(real)
        fetch_ms = (time.perf_counter() - t0) / 20 * 1e3
        ta, tb = [], []
        for i in range(args.warmup + args.iters):
            for src, times in ((lambda: next(real), ta), (lambda: pre[i % len(pre)], tb)):  # noqa: F821 (defined above; re-bound each round)
                sync(args.device)
                t = time.perf_counter()
                b = src()
                plain.step(b["a"].to(args.device, non_blocking=True), b["b"].to(args.device, non_blocking=True))
                sync(args.device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t)
        ratio = median([a / b for a, b in zip(ta, tb)])
        print(
            f"| {workers} | {args.pin_memory} | {workers > 0} | {fetch_ms:.1f} | {median(ta):.3f} | {median(tb):.3f} "
            f"| {ratio:.3f} | {load()} |",
            flush=True,
        )
        del real


if __name__ == "__main__":
    main()
