"""Training (and inference) speed of the Lightning module against the plain PyTorch loop, in one process.

    python bench/bench_train.py                        # CPU: 128x128, batch 1, fp32 (+ bf16-mixed if native)
    python bench/bench_train.py --precisions 32-true bf16-mixed   # bf16 even where emulated (very slow)
    python bench/bench_train.py --device cuda --size 256 --precisions 32-true bf16-mixed
    python bench/bench_train.py --set model.adam_impl=fused   # any config override, applied to both contenders

A real ``Trainer`` fits the real ``CycleGAN`` (manual optimization) from the real config; a callback runs one
plain-loop iteration (bench/plain_loop.py) after every Lightning batch, so the two alternate A B A B on the same
pre-loaded batches, starting from the same weights. A Lightning iteration is the time from one
``on_train_batch_start`` to the next minus the plain iteration run in between, so it includes everything the
Lightning loop does around ``training_step`` (fetching, hooks, logging). Warm-up iterations are dropped.
Peak memory is measured in a fresh subprocess per contender (RSS on CPU, ``max_memory_allocated`` on GPU); the
counted FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one plain iteration.
The last line is ``lightning_over_plain=<ratio>``: the worst (largest) median ratio over the precisions run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import hydra
import torch
from lightning import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ListDataset,
    compose_cfg,
    load,
    machine,
    median,
    model_dict,
    peak_rss_mib,
    preload,
    sync,
)
from plain_loop import PlainCycleGAN  # noqa: E402

from cyclegan_lightning.hardware import cpu_bf16  # noqa: E402

N_DISTINCT = 8  # distinct pre-loaded batches, cycled


def build(size: int, precision: str, overrides: list[str], device: str):
    cfg = compose_cfg(size, [f"trainer.precision={precision}", *overrides], device)
    m = cfg.model
    plain = PlainCycleGAN(model_dict(cfg), precision, m.adam_impl, m.channels_last, m.compile_generators)
    return cfg, plain


def lightning_parts(cfg, plain: PlainCycleGAN | None, n_batches: int, callbacks: list):
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    if plain is not None:  # same starting weights
        plain.nets.load_state_dict({k: v for k, v in module.state_dict().items() if k.split(".")[0] in plain.nets})
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False, limit_train_batches=n_batches)
    return module, trainer


class Interleave(Callback):
    """After each Lightning batch, run one plain iteration; time both."""

    def __init__(self, plain: PlainCycleGAN, loader, device: str):
        self.plain, self.it, self.device = plain, iter(loader), device
        self.lightning: list[float] = []
        self.plain_times: list[float] = []
        self.last: float | None = None
        self.excluded = 0.0
        # CPU time of this process (all its threads): far less sensitive than wall time to other users' load
        self.lightning_cpu: list[float] = []
        self.plain_cpu: list[float] = []
        self.last_cpu: float | None = None
        self.excluded_cpu = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sync(self.device)
        now, now_cpu = time.perf_counter(), time.process_time()
        if self.last is not None:
            self.lightning.append(now - self.last - self.excluded)
            self.lightning_cpu.append(now_cpu - self.last_cpu - self.excluded_cpu)
        self.last, self.last_cpu = now, now_cpu

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        b = next(self.it)
        self.plain.step(b["a"].to(self.device), b["b"].to(self.device))
        sync(self.device)
        t1, c1 = time.perf_counter(), time.process_time()
        self.plain_times.append(t1 - t0)
        self.plain_cpu.append(c1 - c0)
        self.excluded, self.excluded_cpu = time.perf_counter() - t0, time.process_time() - c0


def bench_precision(args, precision: str, batches: list[dict]) -> dict:
    cfg, plain = build(args.size, precision, args.set, args.device)
    plain.to(args.device)
    n = args.warmup + args.iters + 1  # +1: the last Lightning interval ends at the next batch start
    dataset = ListDataset(batches, n)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None)
    cb = Interleave(plain, torch.utils.data.DataLoader(dataset, batch_size=None), args.device)
    module, trainer = lightning_parts(cfg, plain, n, [cb])
    trainer.fit(module, train_dataloaders=loader)
    lt, pt = cb.lightning[args.warmup :], cb.plain_times[args.warmup : len(cb.lightning)]
    ratios = [a / b for a, b in zip(lt, pt)]
    lc, pc = cb.lightning_cpu[args.warmup :], cb.plain_cpu[args.warmup : len(cb.lightning_cpu)]
    diff = max(
        (p.detach().cpu() - q.detach().cpu()).abs().max().item()
        for (_, p), (_, q) in zip(sorted(module.named_parameters()), sorted(plain.nets.named_parameters()))
    )
    return {
        "precision": precision,
        "lightning_s": median(lt),
        "plain_s": median(pt),
        "ratio": median(ratios),
        "ratio_of_medians": median(lt) / median(pt),
        "n": len(lt),
        "lightning_cpu_s": median(lc),
        "plain_cpu_s": median(pc),
        "ratio_cpu": median([a / b for a, b in zip(lc, pc)]),
        "max_weight_diff": diff,
        "load": load(),
    }


def memory_child(args) -> None:
    """One contender alone in this process: peak memory (and the counted FLOPs of one plain iteration)."""
    from torch.utils.flop_counter import FlopCounterMode

    precision, who = args.memory_child.split(",")
    batches = preload(compose_cfg(args.size, args.set, args.device), 2)
    cfg, plain = build(args.size, precision, args.set, args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {}
    if who == "plain":
        plain.to(args.device)
        for i in range(3):
            b = batches[i % len(batches)]
            a_, b_ = b["a"].to(args.device), b["b"].to(args.device)
            if i == 0:
                with FlopCounterMode(display=False) as fc:
                    plain.step(a_, b_)
                out["flops"] = fc.get_total_flops()
            else:
                plain.step(a_, b_)
    else:
        del plain
        module, trainer = lightning_parts(cfg, None, 3, [])
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(ListDataset(batches, 3), batch_size=None))
    sync(args.device)
    out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else peak_rss_mib()
    print("RESULT " + json.dumps(out))


def run_child(args, precision: str, who: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        f"{precision},{who}",
        "--size",
        str(args.size),
        "--device",
        args.device,
    ] + (["--set", *args.set] if args.set else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def bench_inference(args, precision: str, batches: list[dict]) -> dict:
    """Generator inference at ``--infer-size``: LightningModule.forward vs the bare generator, interleaved."""
    cfg, plain = build(args.infer_size, precision, args.set, args.device)
    module, _ = lightning_parts(cfg, plain, 1, [])
    module.setup("predict")
    module.to(args.device).eval()
    plain.to(args.device)
    x = torch.nn.functional.interpolate(batches[0]["a"], size=(args.infer_size,) * 2, mode="bilinear").to(args.device)
    lt, pt = [], []
    with torch.inference_mode(), plain.autocast(args.device):
        for i in range(args.infer_iters + 1):
            for fn, times in ((lambda: module(x, "a2b"), lt), (lambda: plain.gen_a2b(x), pt)):
                sync(args.device)
                t0 = time.perf_counter()
                fn()
                sync(args.device)
                if i:
                    times.append(time.perf_counter() - t0)
    return {
        "precision": precision,
        "lightning_ips": 1 / median(lt),
        "plain_ips": 1 / median(pt),
        "ratio": median(lt) / median(pt),
        "load": load(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="default: 32-true, plus bf16-mixed on GPUs and on CPUs with native bf16",
    )
    p.add_argument("--iters", type=int, default=8, help="timed iterations per contender and precision")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", nargs="*", default=[], help="config overrides for both, e.g. model.adam_impl=fused")
    p.add_argument("--infer-size", type=int, default=256)
    p.add_argument("--infer-iters", type=int, default=5, help="0 skips the inference bench")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory/FLOP subprocesses")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 makes CPU-time ratios robust to load)")
    p.add_argument("--ratio", choices=["wall", "cpu"], default="wall", help="which ratio the last line reports")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)

    print(f"machine: {machine()}")
    if args.precisions is None:
        native = args.device != "cpu" or cpu_bf16()[0]
        args.precisions = ["32-true", "bf16-mixed"] if native else ["32-true"]
        if not native:
            print(
                "bf16-mixed skipped: this CPU would emulate it (86x slower measured); --precisions 32-true "
                "bf16-mixed runs it anyway"
            )
    print(
        f"bench: {args.size}x{args.size}, batch 1, ResNet-9 ngf 64 / PatchGAN ndf 64, "
        f"overrides {args.set or 'none'}, "
        f"{args.warmup} warm-up + {args.iters} timed iterations each, interleaved; {load()}"
    )
    batches = preload(compose_cfg(args.size, args.set, args.device), N_DISTINCT)
    rows = []
    for precision in args.precisions:
        r = bench_precision(args, precision, batches)
        if not args.no_memory:
            mp, ml = run_child(args, precision, "plain"), run_child(args, precision, "lightning")
            r |= {"flops": mp["flops"], "peak_plain_mib": mp["peak_mib"], "peak_lightning_mib": ml["peak_mib"]}
        rows.append(r)
        print(f"[train {precision}] {json.dumps(r)}", flush=True)

    unit = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
    print("\n| precision | CPU s/it Lightning / plain | CPU-time ratio (median of pairs) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['lightning_cpu_s']:.3f} / {r['plain_cpu_s']:.3f} | {r['ratio_cpu']:.3f} |")
    print(
        f"\n| precision | Lightning s/it | plain s/it | ratio (median of pairs) | images/s (L / plain) | "
        f"counted TFLOP/it | achieved GFLOP/s (plain) | {unit} MiB (L / plain, ratio) | max weight diff | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fl = r.get("flops")
        mem = (
            (
                f"{r['peak_lightning_mib']:.0f} / {r['peak_plain_mib']:.0f} "
                f"({r['peak_lightning_mib'] / r['peak_plain_mib']:.3f})"
            )
            if fl
            else "-"
        )
        print(
            f"| {r['precision']} | {r['lightning_s']:.3f} | {r['plain_s']:.3f} | {r['ratio']:.3f} | "
            f"{1 / r['lightning_s']:.2f} / {1 / r['plain_s']:.2f} | {fl / 1e12:.3f} | "
            f"{fl / r['plain_s'] / 1e9:.0f} | {mem} | {r['max_weight_diff']:.1e} | {r['load']} |"
            if fl
            else f"| {r['precision']} | {r['lightning_s']:.3f} | {r['plain_s']:.3f} | {r['ratio']:.3f} | "
            f"{1 / r['lightning_s']:.2f} / {1 / r['plain_s']:.2f} | - | - | - | {r['max_weight_diff']:.1e} | "
            f"{r['load']} |"
        )
    if args.infer_iters:
        print(
            f"\n| inference {args.infer_size}x{args.infer_size} | module.forward images/s | bare generator images/s "
            f"| ratio | load |\n|---|---|---|---|---|"
        )
        for precision in args.precisions:
            r = bench_inference(args, precision, batches)
            print(f"| {precision} | {r['lightning_ips']:.2f} | {r['plain_ips']:.2f} | {r['ratio']:.3f} | {r['load']} |")
    key = "ratio" if args.ratio == "wall" else "ratio_cpu"
    print(f"lightning_over_plain={max(r[key] for r in rows):.4f}")


if __name__ == "__main__":
    main()
