"""Folder prediction on the CPU: our predict.py (each backend) against the reference's test.py and a plain loop.

    python bench/bench_vs_reference.py /path/to/pytorch-CycleGAN-and-pix2pix            # 128 and 256, fp32
    python bench/bench_vs_reference.py REF --sizes 256 --counts 2 6 --repeats 3 --backends eager onnxruntime compile

REF is a checkout of junyanz/pytorch-CycleGAN-and-pix2pix at commit 2a7afba (the fork premsuggu/... holds it unchanged
minus imgs/), with ``dominate`` and ``wandb`` installed; its code never enters this repository.
All contenders translate the same photo-like PNGs with the same generator file (a reference-format
``latest_net_G.pth``: ResNet-9, ngf 64, instance norm, no dropout, random init), fp32, batch 1, each in a fresh
process, timed from launch to exit. Every contender runs on a small and a large folder; the difference of the two
times over the difference of image counts is the steady seconds per image, with start-up (imports, model load, ONNX
export, compilation) cancelled. Each contender first runs the small folder once, untimed: that warms the OS file
cache for everyone and inductor's on-disk cache for ``compile`` (so its start-up column is the warm one; the first
run ever of an image size compiles for about a minute more). Runs are interleaved (size, repeat, folder, contender),
so a change of machine load hits all alike; the table reports medians over repeats and ratios against the reference,
in wall time and in the children's CPU time (user + system, all threads). On a busy machine use ``--threads 1``:
with two threads, the one that waits for a descheduled partner spins and inflates CPU time; with one, CPU time is
the work done.

- reference: ``test.py --model test --no_dropout --preprocess none`` (no resize: same pixels as ours). It writes
  real and fake per image plus an HTML page;
- plain: a bare loop in this file: PIL decode, generator under ``inference_mode``, PIL encode, one image at a time;
- ours: ``predict.py`` with ``translator.backend=<b>`` (writes the fake and an index.html).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cyclegan_lightning.hardware import describe_cpu
from cyclegan_lightning.networks import ResnetGenerator, init_weights


def make_images(folder: Path, n: int, size: int) -> None:
    """``n`` distinct photo-like PNGs (scikit-image's public-domain photos, cropped and resized)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = photos[i % len(photos)]
        h, w = arr.shape[:2]
        s = min(h, w) - 8 * (i // len(photos))  # a different crop for each pass over the photos
        img = Image.fromarray(np.ascontiguousarray(arr[:s, :s])).resize((size, size), Image.BICUBIC)
        img.save(folder / f"img_{i:03d}.png")


def plain_child(ckpt: str, src: str, dst: str) -> None:
    """The simplest correct loop: what a user would write by hand."""
    gen = ResnetGenerator(3, 3, ngf=64, n_blocks=9)
    gen.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    gen.eval()
    Path(dst).mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for path in sorted(Path(src).glob("*.png")):
            x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
            y = gen(x.permute(2, 0, 1)[None])[0]
            out = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(out).save(Path(dst) / path.name)


def command(contender: str, ref: Path, ckpt_dir: Path, src: Path, out: Path) -> tuple[list[str], Path]:
    if contender == "reference":
        return [
            sys.executable,
            "test.py",
            "--dataroot",
            str(src),
            "--name",
            "bench",
            "--model",
            "test",
            "--no_dropout",
            "--checkpoints_dir",
            str(ckpt_dir),
            "--results_dir",
            str(out),
            "--preprocess",
            "none",
            "--num_test",
            "1000000",
        ], ref
    ckpt = ckpt_dir / "bench" / "latest_net_G.pth"
    if contender == "plain":
        return [sys.executable, __file__, "--plain-child", str(ckpt), str(src), str(out)], ROOT
    backend = contender.split(":", 1)[1]
    return [
        sys.executable,
        "predict.py",
        f"ckpt_path={ckpt}",
        f"input={src}",
        f"output_dir={out}",
        f"translator.backend={backend}",
        "translator.device=cpu",
        "progress=false",
        f"hydra.run.dir={out}/.hydra_run",
    ], ROOT


def run_once(
    contender: str, ref: Path, ckpt_dir: Path, src: Path, work: Path, threads: int | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + system, all its threads) of one run."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    cmd, cwd = command(contender, ref, ckpt_dir, src, out)
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    if threads:  # torch (and through it our ONNX Runtime session) read this at start-up
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{contender} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    n_in = len(list(src.glob("*.png")))
    n_out = sum(1 for p in out.rglob("*.png") if "fake" in p.name or contender != "reference")
    if n_out < n_in:
        raise SystemExit(f"{contender}: {n_out} outputs for {n_in} inputs in {out}")
    return seconds, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", nargs="?", help="checkout of the reference implementation (commit 2a7afba)")
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--counts", nargs=2, type=int, default=[2, 8], metavar=("SMALL", "LARGE"), help="folder sizes")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--backends", nargs="+", default=["eager", "fastconv"], help="ours: eager | compile | onnxruntime | fastconv"
    )
    p.add_argument("--threads", type=int, default=None, help="threads per contender (1: CPU time is robust to load)")
    p.add_argument("--no-reference", action="store_true", help="ours and the plain loop only")
    p.add_argument("--plain-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain_child:
        return plain_child(*args.plain_child)
    if not args.no_reference and not (args.ref and (Path(args.ref) / "test.py").is_file()):
        raise SystemExit("give the reference checkout's path (a folder with test.py), or --no-reference")
    ref = Path(args.ref).resolve() if args.ref else Path()

    print(
        f"CPU: {describe_cpu()}; {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at start"
    )
    contenders = ([] if args.no_reference else ["reference"]) + ["plain"] + [f"ours:{b}" for b in args.backends]
    with tempfile.TemporaryDirectory(prefix="bench_vs_ref_") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        ckpt_dir = work / "ckpt"
        (ckpt_dir / "bench").mkdir(parents=True)
        gen = init_weights(ResnetGenerator(3, 3, ngf=64, n_blocks=9))  # the reference's init: normal(0, 0.02)
        torch.save(gen.state_dict(), ckpt_dir / "bench" / "latest_net_G.pth")
        rows = []
        for size in args.sizes:
            folders = {n: work / f"data{size}_{n}" for n in args.counts}
            for n, folder in folders.items():
                make_images(folder, n, size)
            per_image: dict[str, list[float]] = {c: [] for c in contenders}
            per_image_cpu: dict[str, list[float]] = {c: [] for c in contenders}
            startup: dict[str, list[float]] = {c: [] for c in contenders}
            loads = []
            for c in contenders:  # untimed: fills the OS file cache and inductor's on-disk cache (compile)
                warm = run_once(c, ref, ckpt_dir, folders[args.counts[0]], work, args.threads)
                print(f"  {size}px warm-up {c:18s} {warm[0]:7.1f} s wall (not counted)", flush=True)
            for rep in range(args.repeats):
                times: dict[tuple[str, int], tuple[float, float]] = {}
                for n in args.counts:
                    for c in contenders:  # interleaved: every contender sees the same stretch of machine load
                        times[c, n] = run_once(c, ref, ckpt_dir, folders[n], work, args.threads)
                        loads.append(os.getloadavg()[0])
                        print(
                            f"  {size}px rep {rep} {c:18s} {n:3d} images: {times[c, n][0]:7.1f} s wall, "
                            f"{times[c, n][1]:7.1f} s CPU, load {loads[-1]:.1f}",
                            flush=True,
                        )
                small, large = args.counts
                for c in contenders:
                    s = (times[c, large][0] - times[c, small][0]) / (large - small)
                    per_image[c].append(s)
                    per_image_cpu[c].append((times[c, large][1] - times[c, small][1]) / (large - small))
                    startup[c].append(times[c, small][0] - small * s)
            base_key = "reference" if "reference" in per_image else "plain"
            base, base_cpu = statistics.median(per_image[base_key]), statistics.median(per_image_cpu[base_key])
            for c in contenders:
                s, s_cpu = statistics.median(per_image[c]), statistics.median(per_image_cpu[c])
                rows.append(
                    (
                        size,
                        c,
                        1 / s,
                        base / s,
                        s_cpu,
                        base_cpu / s_cpu,
                        statistics.median(startup[c]),
                        min(loads),
                        max(loads),
                    )
                )
    ref_name = "reference" if not args.no_reference else "plain"
    print(
        f"\n| size | contender | images/s (wall, steady) | x {ref_name} (wall) | CPU s/image | x {ref_name} (CPU time) "
        f"| start-up s (wall) | load (1-min avg) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, c, ips, ratio, cpu, ratio_cpu, start, lo, hi in rows:
        print(
            f"| {size}² | {c} | {ips:.3f} | {ratio:.2f} | {cpu:.2f} | {ratio_cpu:.2f} | {start:.1f} | "
            f"{lo:.1f}-{hi:.1f} |"
        )


if __name__ == "__main__":
    main()
