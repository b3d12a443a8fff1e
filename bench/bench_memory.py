"""Peak memory of one training step at 256, 512 and 1024 pixels, with and without activation checkpointing, and
the step-time cost of checkpointing.

    python bench/bench_memory.py                          # CPU: 256 and 512, each in a fresh process
    python bench/bench_memory.py --sizes 256 512 1024     # 1024 runs only where it fits in the free RAM
    python bench/bench_memory.py --device cuda --sizes 256 512 1024
    python bench/bench_memory.py --time-size 256 --rounds 4   # step-time ratio only (interleaved, one process)

Memory: one fresh process per (size, checkpointing) point runs the real ``CycleGAN`` module through a Lightning
``Trainer`` (reference networks: ResNet-9 ngf 64, 70x70 PatchGAN ndf 64, batch 1, fp32, random images) for
``--steps`` steps. On CPU the figure is the process's peak RSS (VmHWM), and the step's own share (peak minus the RSS
before the first step: the model, Python and torch); on CUDA ``torch.cuda.max_memory_allocated``. A point whose
estimate (the 256 figure scaled by the area) exceeds the free RAM is skipped and says so; each child also runs under
an RLIMIT_DATA cap, so a wrong estimate fails with an allocation error instead of waking the OOM killer.

Time: both variants (same weights) alternate step by step in one process, so load from other users hits both; the
figure is the median of the per-round ratios, wall and process CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose_cfg, load, machine, median, model_dict, peak_rss_mib  # noqa: E402

GIB = 1024**3


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(size: int, checkpointing: bool, steps: int, device: str) -> dict:
    """One point, in this (fresh) process: fit ``steps`` batches and report peak memory and step times."""
    import hydra
    import lightning as L

    cfg = compose_cfg(size, [f"model.activation_checkpointing={checkpointing}", "model.pool_size=0"], device)
    module = hydra.utils.instantiate(cfg.model)
    g = torch.Generator().manual_seed(0)
    data = [
        {"a": torch.rand(3, size, size, generator=g) * 2 - 1, "b": torch.rand(3, size, size, generator=g) * 2 - 1}
        for _ in range(steps)
    ]
    record: dict = {"size": size, "checkpointing": checkpointing, "step_s": []}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                record["before_mib"] = rss_mib()
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    record["before_cuda_mib"] = torch.cuda.memory_allocated() / 2**20
            if device == "cuda":
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if device == "cuda":
                torch.cuda.synchronize()
            record["step_s"].append(time.perf_counter() - self.t)

    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=1))
    record["peak_mib"] = peak_rss_mib()
    if device == "cuda":
        record["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def spawn(size: int, checkpointing: bool, steps: int, device: str, cap: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(size),
        str(int(checkpointing)),
        "--steps",
        str(steps),
        "--device",
        device,
    ]

    def limit():
        if cap:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not lines:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"size": size, "checkpointing": checkpointing, "error": tail[:160]}
    return json.loads(lines[-1])


def memory_table(sizes: list[int], steps: int, device: str, margin_gib: float) -> None:
    rows: list[dict] = []
    for size in sizes:
        for ckpt in (False, True):
            base = next(
                (r for r in rows if r["size"] == sizes[0] and r["checkpointing"] == ckpt and "peak_mib" in r), None
            )
            cap = None
            if device == "cpu":
                free = available_bytes() - margin_gib * GIB
                if base:
                    step = (base["peak_mib"] - base["before_mib"]) * 2**20 * (size / base["size"]) ** 2
                    need = base["before_mib"] * 2**20 + step
                    if need > free:
                        rows.append(
                            {
                                "size": size,
                                "checkpointing": ckpt,
                                "error": f"skipped: needs ~{need / GIB:.1f} GiB, {free / GIB:.1f} GiB free",
                            }
                        )
                        print(f"  {size} ckpt={ckpt}: {rows[-1]['error']}", flush=True)
                        continue
                cap = int(max(free, 1 * GIB))
            print(f"  {size} ckpt={ckpt}: running ({load()})", flush=True)
            rows.append(spawn(size, ckpt, steps, device, cap))
            print(f"    {rows[-1]}", flush=True)
    unit = "CUDA max_memory_allocated" if device == "cuda" else "peak RSS"
    print(f"\n| size | checkpointing | {unit} MiB | step's own MiB | vs off (peak) | vs off (step's own) | s/step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['size']} | {'on' if r['checkpointing'] else 'off'} | {r['error']} | | | | |")
            continue
        key, before = ("cuda_peak_mib", "before_cuda_mib") if device == "cuda" else ("peak_mib", "before_mib")
        own = r[key] - r[before]
        off = next((o for o in rows if o["size"] == r["size"] and not o["checkpointing"] and "error" not in o), None)
        rel = f"{r[key] / off[key]:.2f}" if off else "-"
        rel_own = f"{own / (off[key] - off[before]):.2f}" if off else "-"
        print(
            f"| {r['size']} | {'on' if r['checkpointing'] else 'off'} | {r[key]:.0f} | {own:.0f} | {rel} | {rel_own} "
            f"| {min(r['step_s']):.1f} |"
        )


def time_ratio(size: int, rounds: int, device: str) -> None:
    """Checkpointing on vs off, alternating step by step in one process (the plain loop: same math, no Lightning)."""
    from plain_loop import PlainCycleGAN

    from cyclegan_lightning.networks import set_activation_checkpointing

    cfg = compose_cfg(size, ["model.pool_size=0"], device)
    models = {}
    for name in ("off", "on"):
        torch.manual_seed(0)
        models[name] = PlainCycleGAN(model_dict(cfg)).to(device)
    for gen in (models["on"].gen_a2b, models["on"].gen_b2a):
        set_activation_checkpointing(gen)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(1, 3, size, size, generator=g).to(device) * 2 - 1 for _ in range(2))
    wall, cpu = {"off": [], "on": []}, {"off": [], "on": []}
    for i in range(rounds + 1):  # round 0 warms up (Adam state, allocator)
        for name in ("off", "on") if i % 2 else ("on", "off"):
            if device == "cuda":
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            models[name].step(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        if i:
            print(f"  round {i}: off {wall['off'][-1]:.2f}s, on {wall['on'][-1]:.2f}s; {load()}", flush=True)
    ratio = median([x / y for x, y in zip(wall["on"], wall["off"])])
    ratio_cpu = median([x / y for x, y in zip(cpu["on"], cpu["off"])])
    print(
        f"\n| {size}x{size} step | off s (median) | on s (median) | on/off wall | on/off CPU time "
        "|\n|---|---|---|---|---|"
    )
    print(f"| fp32, batch 1 | {median(wall['off']):.2f} | {median(wall['on']):.2f} | {ratio:.3f} | {ratio_cpu:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--steps", type=int, default=1, help="steps per memory point (the first holds the peak)")
    p.add_argument("--time-size", type=int, default=256, help="size of the interleaved step-time comparison")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (0: no time comparison)")
    p.add_argument("--no-memory", action="store_true", help="only the step-time comparison")
    p.add_argument("--margin-gib", type=float, default=3.0, help="RAM left to others when deciding what fits")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", nargs=2, type=int, metavar=("SIZE", "CKPT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], bool(args.child[1]), args.steps, args.device)))
        return
    print(f"machine: {machine()}; CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"bench: ResNet-9 ngf 64 + 70x70 PatchGAN ndf 64, batch 1, fp32, pool off; {load()}")
    if not args.no_memory:
        memory_table(args.sizes, args.steps, args.device, args.margin_gib)
    if args.rounds:
        time_ratio(args.time_size, args.rounds, args.device)
    print(f"\n{load()} at end")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
