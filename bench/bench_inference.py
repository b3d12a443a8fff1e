"""Inference benchmark: prints figures, asserts nothing (not a timed test).

1. images/s at 256x256 and 1024x1024 of ``Translator.translate_tensor`` on each backend (fp32; bf16 eager only where
   the CPU has native bf16, or with --bf16) against a plain ``torch.inference_mode()`` loop over the same generator,
   measured alternately in the same process, and the first image's latency (backend build included);
2. peak resident memory of tiled inference on a 4096x4096 image, in a fresh subprocess;
3. the largest seam error: tiled vs whole-image inference on a photo small enough for both.

The generator is the reference default (ResNet, 9 blocks, ngf 64, instance norm) with random N(0, 0.02) weights:
speed and memory do not depend on the weights; the seam error of a trained network can differ.

    python bench/bench_inference.py                 # all: ~30 min on a loaded 2-core CPU
    python bench/bench_inference.py --quick         # fewer repeats
    python bench/bench_inference.py --skip speed1024 tiled
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cyclegan_lightning.hardware import cpu_bf16, describe_cpu  # noqa: E402
from cyclegan_lightning.inference import LoadedGenerators, Translator  # noqa: E402
from cyclegan_lightning.inference.tiling import translate_tiled  # noqa: E402
from cyclegan_lightning.networks import ResnetGenerator, init_weights  # noqa: E402
from cyclegan_lightning.networks.padding import translate_padded  # noqa: E402


def generator(n_blocks: int = 9) -> ResnetGenerator:
    torch.manual_seed(0)
    return init_weights(ResnetGenerator(3, 3, ngf=64, n_blocks=n_blocks)).eval()


def translator_for(gen, precision: str, tile_size=None, backend: str = "eager") -> Translator:
    loaded = LoadedGenerators({"a2b": gen}, {"a": 3, "b": 3}, "bench", Path("bench.pth"))
    return Translator(loaded, device="cpu", precision=precision, tile_size=tile_size, backend=backend)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{describe_cpu()}, load average at start {load:.1f}"
    )


def bench_speed(size: int, repeats: int, backends: list[str], bf16: bool) -> None:
    """Each backend (fp32) and bf16 eager against the plain loop, alternately; first-image latency includes building
    the backend (ONNX export + session, or compilation for this shape)."""
    gen = generator()
    x01 = torch.rand(1, 3, size, size)
    for precision, backend in [("32", b) for b in backends] + ([("bf16", "eager")] if bf16 else []):
        t0 = time.perf_counter()
        translator = translator_for(gen, precision, backend=backend)
        translator.translate_tensor(x01)
        first = time.perf_counter() - t0

        def plain():
            with torch.inference_mode():
                if precision == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return gen(x01 * 2 - 1)
                return gen(x01 * 2 - 1)

        def ours():
            return translator.translate_tensor(x01)

        plain(), ours()  # warm-up (oneDNN kernels, allocator)
        times = {"plain": [], "translator": []}
        for _ in range(repeats):  # alternate, so a change of machine load hits both alike
            for name, fn in (("plain", plain), ("translator", ours)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        best = {k: min(v) for k, v in times.items()}
        ratio = best["plain"] / best["translator"]
        print(
            f"{size}x{size} {'fp32' if precision == '32' else precision:>4} {backend:>11}: translator "
            f"{1 / best['translator']:7.3f} img/s, plain eager loop {1 / best['plain']:7.3f} img/s, translator/plain "
            f"{ratio:5.2f} (best of {repeats}); first image {first:5.1f} s (backend build included), "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def tiled_child(size: int, tile: int, overlap: int, n_blocks: int) -> None:
    """Runs in a fresh process: peak RSS of the tiled translation of one size x size image."""
    torch.set_grad_enabled(False)
    gen = generator(n_blocks)
    x = torch.rand(1, 3, size, size) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with torch.inference_mode():
        out = translate_tiled(gen, x, tile_size=tile, overlap=overlap, stats_size=tile)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert out.shape == (1, 3, size, size)
    print(
        f"tiled {size}x{size} (tile {tile}, overlap {overlap}, stats_size {tile}, ResNet {n_blocks} blocks ngf "
        "64, fp32): "
        f"peak RSS {peak:.0f} MiB (before translating: {base:.0f} MiB with the model and the input), {seconds:.0f} s",
        flush=True,
    )


def bench_seams(size: int, tile: int, overlap: int) -> None:
    from skimage import data as skdata  # a bundled photo: no download

    photo = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(photo, size=(size, size), mode="area") * 2 - 1
    gen = generator()
    with torch.inference_mode():
        whole = translate_padded(gen, x)
        tiled = translate_tiled(gen, x, tile_size=tile, overlap=overlap, stats_size=1024)
        err = (tiled - whole).abs()
        tiled_crop = translate_tiled(gen, x, tile_size=tile, overlap=overlap, stats_size=tile)  # as beyond stats_size
        err_crop = (tiled_crop - whole).abs()
    print(
        f"seams {size}x{size} photo, tile {tile}, overlap {overlap} (outputs in [-1, 1]): "
        f"exact shared stats max |tiled - whole| {err.max():.4f}, mean {err.mean():.5f}; "
        f"stats from a central {tile} crop (what images beyond stats_size get) max {err_crop.max():.4f}, "
        f"mean {err_crop.mean():.5f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed256", "speed1024", "tiled", "seams"])
    parser.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"], help="eager | compile | onnxruntime")
    parser.add_argument("--bf16", action="store_true", help="also bf16 eager where the CPU would emulate it (slow)")
    parser.add_argument("--tiled-child", nargs=4, type=int, metavar=("SIZE", "TILE", "OVERLAP", "BLOCKS"))
    parser.add_argument(
        "--tiled-blocks",
        type=int,
        default=1,
        help="residual blocks of the 4096 run: peak memory is "
        "set by the full-resolution layers, not the block count; time grows ~linearly with it",
    )
    args = parser.parse_args()
    if args.tiled_child:
        tiled_child(*args.tiled_child)
        return
    print(machine(), flush=True)
    bf16 = args.bf16 or cpu_bf16()[0]
    if not bf16:
        print("bf16 skipped: this CPU would emulate it (many times slower than fp32); --bf16 runs it anyway")
    if "speed256" not in args.skip:
        bench_speed(256, 3 if args.quick else 10, args.backends, bf16)
    if "speed1024" not in args.skip:
        bench_speed(1024, 1 if args.quick else 3, args.backends, bf16)
    if "tiled" not in args.skip:
        subprocess.run(
            [sys.executable, __file__, "--tiled-child", "4096", "512", "128", str(args.tiled_blocks)], check=True
        )
    if "seams" not in args.skip:
        bench_seams(512, 256, 128)


if __name__ == "__main__":
    main()
