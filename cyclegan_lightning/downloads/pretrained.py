"""``ckpt_path=pretrained:<name>``: the reference's published CycleGAN generators, fetched once into the cache.

Each file is one generator in the reference's ``latest_net_G.pth`` layout, translating the way its name says
(``horse2zebra``: horse to zebra, ``style_monet``: photo to Monet), so it loads as direction ``a2b``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cyclegan_lightning.downloads.download import fetch
from cyclegan_lightning.downloads.registry import artefact

SCHEME = "pretrained:"


def resolve_pretrained(path: str | os.PathLike) -> Path:
    """``pretrained:<name>`` -> the cached generator file (downloaded on first use); any other path as it is.
    An unknown name raises ``UnknownArtefactError`` listing the known ones."""
    text = os.fspath(path)
    if not text.startswith(SCHEME):
        return Path(text)
    return fetch(artefact("pretrained", text[len(SCHEME) :]))
