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

``task="gray2colour"`` (``--task gray2colour``) builds a second task from the same photos, with the same crops:
domain A is the photos in grayscale (stored as RGB, so the demo's 3-channel config runs unchanged), domain B the
colour photos; ``truthB`` holds the colour original of every testA image, ``truthA`` the grayscale of every testB
image. Colourisation has no single right answer, so its paired PSNR rewards plausible colours, not exact ones
(``bench/ablation.py`` uses it as its second dataset).

``task="cel"`` (``--task cel``) changes local *texture* as well as colour: B is the photos through :func:`cel`, a
deterministic cel-shading filter (a Gaussian blur that removes fine texture, a saturation boost, a soft posterize
to a few tone bands per channel, and dark ink lines where the blurred luma has strong edges, all within a few
pixels of each output pixel). ``truthB`` holds :func:`cel` of every testA image; A->B is the task to score. B->A
has no unique answer (the blur and the bands discard detail), so ``truthA`` holds the original crop only as a
reference.
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
from scipy import ndimage

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
TASKS = ("dusk", "gray2colour", "cel")
# cel: blur sigma (px), saturation gain, tone bands per channel, ink where the Sobel magnitude of the luma rises from
# EDGE_START over EDGE_WIDTH, darkening by up to INK
CEL_BLUR, CEL_SATURATION, CEL_BANDS, CEL_EDGE_START, CEL_EDGE_WIDTH, CEL_INK = 1.0, 1.3, 4, 0.3, 0.3, 0.8


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


def gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) colour photo -> its luma (ITU-R 601), as a uint8 (H, W, 3) gray photo."""
    return np.repeat(_to_uint8(_to_float(rgb) @ LUMA)[..., None], 3, axis=-1)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def cel(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) photo -> uint8 cel-shaded photo (the ``cel`` task's B style): flat tone bands, ink edges.

    The bands step smoothly (over a quarter of each band), so the map is continuous and a generator can learn it.
    """
    x = ndimage.gaussian_filter(_to_float(rgb), sigma=(CEL_BLUR, CEL_BLUR, 0), mode="reflect")
    luma = x @ LUMA
    x = np.clip(luma[..., None] + CEL_SATURATION * (x - luma[..., None]), 0.0, 1.0)
    steps = x * CEL_BANDS
    band = np.floor(steps)
    bands = (band + _smoothstep((steps - band - 0.375) / 0.25)) / CEL_BANDS
    edges = np.hypot(ndimage.sobel(luma, 0, mode="reflect"), ndimage.sobel(luma, 1, mode="reflect"))
    ink = _smoothstep((edges - CEL_EDGE_START) / CEL_EDGE_WIDTH)
    return _to_uint8(bands * (1 - CEL_INK * ink[..., None]))


def _task_images(task: str, domain: str, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the image of ``domain`` made from ``crop``, what a perfect translation of it to the other domain is)."""
    if task == "dusk":
        img = crop if domain == "A" else dusk(crop)
        return img, dusk(img) if domain == "A" else undusk(img)
    if task == "cel":  # B->A has no unique answer: its "truth" is the photo the B image was made from
        return (crop, cel(crop)) if domain == "A" else (cel(crop), crop)
    return (gray(crop), crop) if domain == "A" else (crop, gray(crop))


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
    out: str | os.PathLike, n_train: int = 100, n_test: int = 8, size: int = 72, seed: int = 0, task: str = "dusk"
) -> Path:
    """Write ``out/{trainA,trainB,testA,testB,truthA,truthB}``; atomic: built in a temporary folder, then renamed.

    ``size`` equals the demo experiment's ``data.load_size``, so validation only centre-crops the images and the
    ground truth stays pixel-aligned with the translations.
    """
    if task not in TASKS:
        raise ValueError(f"demo task must be one of {TASKS}, got {task!r}")
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
                    img, truth_img = _task_images(task, domain, crop)
                    Image.fromarray(img).save(folder / f"{i:04d}.png")
                    if split == "test":  # what a perfect translation of this test image looks like
                        truth = tmp / f"truth{'BA'[domain == 'B']}"
                        truth.mkdir(exist_ok=True)
                        Image.fromarray(truth_img).save(truth / f"{i:04d}.png")
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
    parser.add_argument("--task", default="dusk", choices=TASKS, help="dusk (the demo) | gray2colour | cel")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    path = build_demo_dataset(args.out, args.n_train, args.n_test, args.size, args.seed, args.task)
    print(f"demo dataset at {path}")


if __name__ == "__main__":
    main()
