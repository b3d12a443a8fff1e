"""Build the bundled demo dataset: real photographs (shipped with scikit-image) vs the same kind of photographs
graded in a neon "cyberpunk" style. No download, deterministic, a few seconds.

    python -m cyclegan_lightning.data.demo --out data/demo

Domain A: random crops of the colour photos in ``skimage.data``. Domain B: *other* random crops of the same photos,
recoloured through a teal-magenta-amber palette, contrast-boosted and posterised. The two domains share content
statistics but not images, which is what CycleGAN needs to learn the style.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")  # colour photos bundled in the wheel
PALETTE = np.array([[8, 10, 40], [0, 160, 190], [230, 40, 160], [255, 200, 80]], dtype=np.float32) / 255.0


def _load_photos() -> list[np.ndarray]:
    from skimage import data as skdata

    photos = []
    for name in PHOTOS:
        try:
            photo = getattr(skdata, name)()
            photos.append((photo[0] if isinstance(photo, tuple) else photo)[..., :3])  # stereo: left view
        except Exception as exc:  # a photo not bundled with this scikit-image version (it would need a download)
            log.warning("skipping scikit-image photo %s: %s", name, exc)
    if not photos:
        raise RuntimeError("no bundled scikit-image photos could be loaded; reinstall scikit-image")
    return photos


def cyberpunk(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 photo in the demo's B style: luminance through a neon palette, posterised."""
    x = rgb.astype(np.float32) / 255.0
    lum = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lum = np.clip((lum - 0.5) * 1.4 + 0.5, 0.0, 1.0)  # contrast
    pos = lum * (len(PALETTE) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(PALETTE) - 2)
    t = (pos - lo)[..., None]
    graded = PALETTE[lo] * (1 - t) + PALETTE[lo + 1] * t
    out = 0.8 * graded + 0.2 * x  # keep a trace of the original colours
    out = np.round(out * 6) / 6  # posterise
    return (out.clip(0, 1) * 255).astype(np.uint8)


def _crops(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BICUBIC)
        crops.append(np.asarray(crop))
    return crops


def build_demo_dataset(
    out: str | os.PathLike, n_train: int = 60, n_test: int = 8, size: int = 96, seed: int = 0
) -> Path:
    """Write ``out/{trainA,trainB,testA,testB}``; atomic: built in a temporary folder then renamed into place."""
    out = Path(out)
    if (out / "trainA").is_dir():
        return out
    rng = np.random.default_rng(seed)
    photos = _load_photos()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out.parent))
    try:
        for split, n in (("train", n_train), ("test", n_test)):
            for domain in ("A", "B"):
                folder = tmp / f"{split}{domain}"
                folder.mkdir()
                for i, crop in enumerate(_crops(photos, n, size, rng)):
                    img = crop if domain == "A" else cyberpunk(crop)
                    Image.fromarray(img).save(folder / f"{i:04d}.png")
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        tmp.rename(out)
    except FileExistsError:  # another process (a DDP rank) built it first
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built demo dataset at %s", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--n-train", type=int, default=60, help="training images per domain")
    parser.add_argument("--n-test", type=int, default=8, help="test images per domain")
    parser.add_argument("--size", type=int, default=96, help="side of the square images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    path = build_demo_dataset(args.out, args.n_train, args.n_test, args.size, args.seed)
    print(f"demo dataset at {path}")


if __name__ == "__main__":
    main()
