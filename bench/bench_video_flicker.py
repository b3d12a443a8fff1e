"""Temporal stability of translated video, with per-frame and with fixed instance-norm statistics.

python bench/bench_video_flicker.py --ckpt outputs/demo/runs/<run>/checkpoints/best.ckpt
python bench/bench_video_flicker.py --ckpt <ckpt> --photo chelsea --size 160x120 --frames 48 --step 1 --lit

Builds a clip offline: a slow pan (``--step`` pixels a frame) over one of scikit-image's photos, encoded losslessly;
translates it with ``video_stats=frame`` and ``video_stats=fixed`` (crf 0, so the codec adds no change of its own);
prints the mean absolute difference between consecutive frames (on [0, 1]) of the input and of both outputs, and
each output's ratio to the input's. Lower is steadier; the input's figure is the motion itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import load, machine  # noqa: E402
from cyclegan_lightning.inference import build_translator  # noqa: E402
from cyclegan_lightning.inference.video import (  # noqa: E402
    mean_frame_change,
    pan_over,
    read_frames,
    translate_video,
    write_video,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a trained checkpoint (a .ckpt or a reference *_net_G*.pth)")
    parser.add_argument("--photo", default="coffee", help="scikit-image photo: coffee, chelsea, astronaut, ...")
    parser.add_argument("--size", default="128x96", help="frame size WxH")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--step", type=int, default=1, help="pan speed in pixels per frame")
    parser.add_argument("--stats-frames", type=int, default=16)
    parser.add_argument("--direction", default="a2b")
    parser.add_argument("--lit", action="store_true", help="light the photo from one side (0.2 to 1): a pan into light")
    args = parser.parse_args()
    from skimage import data

    width, height = map(int, args.size.split("x"))
    photo = torch.from_numpy(getattr(data, args.photo)()[..., :3].copy()).permute(2, 0, 1).float() / 255
    if args.lit:
        photo = photo * torch.linspace(0.2, 1.0, photo.shape[-1])
    clip = pan_over(photo, width, height, args.frames, args.step)
    translator = build_translator(args.ckpt, {"device": "cpu", "tile_size": None})
    print(f"{machine()}; {load()}")
    print(f"model: {translator.loaded.describe()}")
    lit = ", lit from one side" if args.lit else ""
    pan = f"pan of {args.step} px/frame over skimage.data.{args.photo}{lit}"
    print(f"clip: {args.frames} frames of {width}x{height}, {pan}")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_video(clip, Path(tmp) / "clip.mp4", fps=24)
        before = mean_frame_change(read_frames(src))
        print(f"input: mean |frame t+1 - frame t| = {before:.5f}")
        for stats in ("frame", "fixed"):
            t0 = time.perf_counter()
            out = Path(tmp) / f"{stats}.mp4"
            translate_video(
                translator, src, out, args.direction, stats=stats, stats_frames=args.stats_frames, crf=0, progress=False
            )
            change = mean_frame_change(read_frames(out))
            print(
                f"video_stats={stats}: mean |frame t+1 - frame t| = {change:.5f} ({change / before:.3f}x the input's) "
                f"[{time.perf_counter() - t0:.1f} s]",
                flush=True,
            )


if __name__ == "__main__":
    main()
