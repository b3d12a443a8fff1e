"""libFuzzer target (atheris) for ``load_image``, the one path training and prediction read images through.

    pip install -e .[fuzz]
    python fuzz/fuzz_load_image.py -max_total_time=600 -rss_limit_mb=2048 -timeout=10 fuzz/corpus

The first byte picks the file extension; the rest is the file. Any outcome other than a finite (C, H, W) tensor
in [0, 1] or an ``ImageLoadError`` naming the file is a crash; so is a hang (``-timeout``) or more memory than
``-rss_limit_mb``. An empty corpus folder given as the first argument is filled with one small valid file of every
format we accept, so mutation starts from real headers. ``tests/test_image_fuzz.py`` runs it for a few seconds
in the slow test set.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["cyclegan_lightning", "PIL"]):
    import numpy as np
    import torch
    from PIL import Image

    from cyclegan_lightning.data import images
    from cyclegan_lightning.data.images import IMG_EXTENSIONS, ImageLoadError, load_image

torch.set_num_threads(1)
# A 198-byte TIFF may declare 12 x 1,135,369 pixels and legitimately decode (zero-filled) to a 160 MB tensor: within
# the default limit, but seconds per input under instrumentation. Fuzz with a smaller limit so every input stays
# fast; the limit itself (and files over it) is tested in tests/test_image_fuzz.py.
images.MAX_IMAGE_PIXELS = 2048 * 2048
_DIR = tempfile.mkdtemp(prefix="fuzz_load_image-")


def write_seed_corpus(folder: Path) -> None:
    """One small valid file per accepted format and mode, prefixed with its extension's index."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8))
    deep = Image.fromarray(np.arange(108, dtype=np.uint16).reshape(9, 12) * 600)
    flt = Image.fromarray(np.linspace(0, 1, 108, dtype=np.float32).reshape(9, 12))
    seeds = [
        (".jpg", rgb, "JPEG", {}),
        (".jpg", rgb.convert("CMYK"), "JPEG", {}),
        (".png", rgb, "PNG", {}),
        (".png", deep, "PNG", {}),
        (".png", rgb.convert("P"), "PNG", {"transparency": 0}),
        (".ppm", rgb, "PPM", {}),
        (".bmp", rgb, "BMP", {}),
        (".tif", rgb, "TIFF", {}),
        (".tif", flt, "TIFF", {}),
        (".tif", deep, "TIFF", {}),
        (".tif", rgb.convert("CMYK"), "TIFF", {}),
        (".webp", rgb, "WEBP", {}),
        (".gif", rgb.convert("P"), "GIF", {"save_all": True, "append_images": [rgb.rotate(90).convert("P")]}),
    ]
    for i, (ext, img, fmt, kwargs) in enumerate(seeds):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kwargs)
        (folder / f"seed_{i:02d}_{fmt.lower()}").write_bytes(bytes([IMG_EXTENSIONS.index(ext)]) + buf.getvalue())


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    ext = IMG_EXTENSIONS[data[0] % len(IMG_EXTENSIONS)]
    path = os.path.join(_DIR, "input" + ext)
    with open(path, "wb") as f:
        f.write(data[1:])
    for channels in (3, 1):
        try:
            out = load_image(path, channels)
        except ImageLoadError as exc:
            if exc.path != path or path not in str(exc):
                raise AssertionError(f"error does not name the file: {exc}") from None
            return
        img = out.image
        if img.ndim != 3 or img.shape[0] != channels or min(img.shape[1:]) < 1:
            raise AssertionError(f"bad shape {tuple(img.shape)}")
        if not (torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1):
            raise AssertionError("values outside [0, 1] or not finite")


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus and (not Path(corpus[0]).exists() or not any(Path(corpus[0]).iterdir())):
        write_seed_corpus(Path(corpus[0]))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
