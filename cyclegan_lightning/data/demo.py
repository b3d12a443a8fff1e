"""Build the bundled demo dataset: daylight photographs (shipped with scikit-image) vs other photographs graded
to "dusk". No download, deterministic, about a second.

    python -m cyclegan_lightning.data.demo --out data/demo

Domain A: random crops of the colour photos in ``skimage.data``. Domain B: *other* random crops of the same photos
through :func:`dusk`, a strong but smooth and exactly invertible colour grade (a per-pixel affine colour mix into
dim purple-blue shadows and warm highlights, then an S-shaped tone curve). Both directions are learnable, and
because the grade is known, the ground truth of every held-out image is written too:

- ``truthB/<name of a testA file>`` = :func:`dusk` of that testA image (what A->B should produce);
- ``truthA/<name of a testB file>`` = :func:`undusk` of that testB image (what B->A should produce).

``cyclegan_lightning.evaluation.paired.PairedMetrics`` scores translations against them (paired PSNR/SSIM).
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
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
SATURATION, GAIN, CURVE = 0.9, 0.6, 0.5  # keep 90% of the chroma, dim to 60%, S-curve mixed in at 50%
SHADOW_TINT = np.array([0.10, 0.02, 0.25], dtype=np.float32)  # added where the luma is 0: purple-blue shadows
LIGHT_TINT = np.array([0.25, 0.05, 0.00], dtype=np.float32)  # added where the luma is 1: warm highlights
# y = MIX @ x + SHADOW_TINT is affine in x (the tints blend linearly in luma); it maps [0, 1]^3 into
# [0.02, 0.85]^3, so nothing is clipped and MIX (singular values 0.69, 0.54, 0.49) inverts exactly.
MIX = (
    GAIN * (SATURATION * np.eye(3) + (1 - SATURATION) * np.outer(np.ones(3), LUMA))
    + np.outer(LIGHT_TINT - SHADOW_TINT, LUMA)
).astype(np.float32)
_TABLE = np.linspace(0.0, 1.0, 4097, dtype=np.float32)


def _curve(x: np.ndarray) -> np.ndarray:
    """Strictly increasing S-curve on [0, 1] (slope >= 1 - CURVE > 0), so it has an inverse."""
    return (1 - CURVE) * x + CURVE * x * x * (3 - 2 * x)


def _to_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (x.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def dusk(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) daylight photo -> uint8 photo in the demo's B style ("dusk")."""
    return _to_uint8(_curve(_to_float(rgb) @ MIX.T + SHADOW_TINT))


def undusk(rgb: np.ndarray) -> np.ndarray:
    """The inverse of :func:`dusk` (exact up to 8-bit rounding): uint8 dusk photo -> uint8 daylight photo."""
    y = np.interp(_to_float(rgb), _curve(_TABLE), _TABLE).astype(np.float32)
    return _to_uint8((y - SHADOW_TINT) @ np.linalg.inv(MIX).T)


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
    out: str | os.PathLike, n_train: int = 100, n_test: int = 8, size: int = 72, seed: int = 0
) -> Path:
    """Write ``out/{trainA,trainB,testA,testB,truthA,truthB}``; atomic: built in a temporary folder, then renamed.

    ``size`` equals the demo experiment's ``data.load_size``, so validation only centre-crops the images and the
    ground truth stays pixel-aligned with the translations.
    """
    out = Path(out)
    if (out / "trainA").is_dir():
        return out
    rng = np.random.default_rng(seed)
    photos = _load_photos()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out.parent))
    try:
        for split, n in (("train", n_train), ("test", n_test)):
            for domain in ("A", "B"):  # separate random crops per domain: unpaired
                folder = tmp / f"{split}{domain}"
                folder.mkdir()
                for i, crop in enumerate(_crops(photos, n, size, rng)):
                    img = crop if domain == "A" else dusk(crop)
                    Image.fromarray(img).save(folder / f"{i:04d}.png")
                    if split == "test":  # what a perfect translation of this test image looks like
                        truth = tmp / f"truth{'BA'[domain == 'B']}"
                        truth.mkdir(exist_ok=True)
                        Image.fromarray(dusk(img) if domain == "A" else undusk(img)).save(truth / f"{i:04d}.png")
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
    parser.add_argument("--n-train", type=int, default=100, help="training images per domain")
    parser.add_argument("--n-test", type=int, default=8, help="test images per domain")
    parser.add_argument("--size", type=int, default=72, help="side of the square images (= data.load_size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    path = build_demo_dataset(args.out, args.n_train, args.n_test, args.size, args.seed)
    print(f"demo dataset at {path}")


if __name__ == "__main__":
    main()
