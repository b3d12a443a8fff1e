"""The reference's CycleGAN datasets into ``<data_dir>/<name>/`` (trainA/ trainB/ testA/ testB/), where
``experiment=<name>`` looks for them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cyclegan_lightning.downloads.archives import unpack_zip
from cyclegan_lightning.downloads.download import DEFAULT_TIMEOUT_S, DownloadError, fetch
from cyclegan_lightning.downloads.registry import artefact, load_registry
from cyclegan_lightning.errors import DataError

log = logging.getLogger(__name__)


def fetch_command(name: str) -> str:
    """The command that fetches dataset ``name``."""
    return f"python -m cyclegan_lightning.fetch dataset={name}"


def fetch_hint(folder: str | os.PathLike) -> str:
    """For a missing data folder: the command that fetches it when ``folder`` (or its parent, for ``<root>/trainA``)
    is named after a dataset the tool can fetch, else ""."""
    names = set(load_registry().names("dataset"))
    for candidate in (Path(folder), Path(folder).parent):
        if candidate.name in names:
            return f"Download it with: {fetch_command(candidate.name)} data_dir={candidate.parent}"
    return ""


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike = "data",
    keep_archive: bool = False,  # keep the zip in the cache (false: deleted once unpacked, as the reference does)
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """``<data_dir>/<name>/`` with the dataset in it: downloaded, verified where a SHA-256 is recorded, and unpacked
    safely and atomically. Already there: nothing is done (and it is said). Never writes over an existing folder."""
    art = artefact("dataset", name)
    dest = Path(data_dir) / name
    if dest.exists():
        missing = [folder for folder in art.layout if not (dest / folder).is_dir()]
        if missing:
            raise DataError(
                f"{dest} exists but has no {', '.join(f + '/' for f in missing)}; it is never written over. Move it "
                f"away (or delete it) and run {fetch_command(name)} again."
            )
        log.info("%s is already there: nothing to do", dest)
        return dest
    try:
        archive = fetch(art, cache_dir=cache_dir, timeout=timeout, progress=progress)
    except DownloadError as exc:
        folders = " ".join(f + "/" for f in art.layout) or "its contents"
        raise DownloadError(f"{exc} Or unpack that zip yourself so that {dest}/ holds {folders}.") from None
    unpack_zip(archive, dest, art.layout)
    if not keep_archive:
        archive.unlink()
    log.info("%s is ready (%s); train on it with: python train.py experiment=%s", dest, art.licence, name)
    return dest
