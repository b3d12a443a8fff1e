"""Real photographs for quality tests: crops of scikit-image's public-domain photos (bundled, no download), and a
known, invertible colour grade that defines domain B. Domain A = crops; domain B = the grade of *other* crops, so
the true A->B translation is ``grade`` and the true B->A translation is ``ungrade``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
GAIN = torch.tensor([1.0, 0.85, 0.6]).view(1, 3, 1, 1)  # per-channel gain and gamma in [0, 1] units: a warm grade
GAMMA = torch.tensor([0.6, 1.0, 1.6]).view(1, 3, 1, 1)


def photo_crops(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) random square crops in [-1, 1], cycling through the photos."""
    from skimage import data

    photos = [torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1).float() for name in PHOTOS]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[1:]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[None, :, y : y + side, x : x + side]
        crops.append(F.interpolate(crop, size=(size, size), mode="area"))
    return torch.cat(crops) / 127.5 - 1


def grade(x: torch.Tensor) -> torch.Tensor:
    """The true A->B translation of [-1, 1] RGB images."""
    return GAIN.to(x) * ((x + 1) / 2).clamp(0, 1) ** GAMMA.to(x) * 2 - 1


def ungrade(y: torch.Tensor) -> torch.Tensor:
    """The true B->A translation (the inverse of ``grade``)."""
    return (((y + 1) / 2).clamp(0, 1) / GAIN.to(y)).clamp(0, 1) ** (1 / GAMMA.to(y)) * 2 - 1


def write_photo_dataset(root: Path, n_train: int = 4, n_test: int = 8, size: int = 40) -> Path:
    """``root/{trainA,trainB,testA,testB}`` PNGs: A = photo crops, B = graded crops of other places."""
    from PIL import Image

    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        for domain, images in (("A", photo_crops(n, size, seed)), ("B", grade(photo_crops(n, size, seed + 10)))):
            folder = root / f"{split}{domain}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(images):
                arr = ((img + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
                Image.fromarray(arr).save(folder / f"{i:03d}.png")
    return root
