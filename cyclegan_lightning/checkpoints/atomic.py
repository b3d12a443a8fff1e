"""Atomic file writes: a crash, kill or full disk during a save never leaves a truncated file (``last.ckpt``, a grid,
a prediction, a report, a download). ``atomic_open`` is the one implementation; the rest are thin uses of it.

Lightning's ``TorchCheckpointIO`` serializes to memory and then writes the target file in place, so a process
killed mid-write (or a disk that fills up) leaves a partial file where the previous good checkpoint was.
``AtomicCheckpointIO`` writes to a temporary file in the same folder, flushes and ``fsync``s it, then
``os.replace``s it over the target (atomic on POSIX and Windows) and ``fsync``s the folder. If anything fails
before the rename, the temporary file is removed, the previous checkpoint is untouched, and a
:class:`~cyclegan_lightning.errors.CheckpointError` says what happened. Remote paths (``s3://`` ...) are left to
Lightning's fsspec writer.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torchvision.utils import save_image

from cyclegan_lightning.errors import CheckpointError

log = logging.getLogger(__name__)


def _is_local(path: _PATH) -> bool:
    return isinstance(get_filesystem(path), LocalFileSystem)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: _PATH, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """The one atomic writer of the project: open a temporary file beside ``path``; on a clean exit it is renamed
    over ``path`` (fsynced first, with its folder, unless ``fsync=False``), on any exception it is removed. So
    ``path`` is either untouched or complete (checkpoints, downloads, reports, grids, predictions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save(obj, path)`` through ``atomic_open``; raises ``CheckpointError`` saying what to do on failure."""
    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except OSError as exc:
        kept = "the previous checkpoint there is unchanged" if path.exists() else "no checkpoint was written"
        raise CheckpointError(
            f"failed to write checkpoint {path} ({exc.strerror or exc}); {kept}. Check that the folder is writable "
            "and has free space (or point paths.log_dir at a larger disk), then resume with ckpt_path=auto."
        ) from exc


def save_png_atomic(image: torch.Tensor, path: _PATH) -> None:
    """``torchvision.utils.save_image`` (float (3, H, W) in [0, 1]) through ``atomic_open``: never half a PNG."""
    with atomic_open(path, "wb") as f:
        save_image(image, f, format="png")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (see module docstring); loading is unchanged."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if not _is_local(path):
            super().save_checkpoint(checkpoint, path)
            return
        log.debug("saving checkpoint %s", path)
        atomic_torch_save(checkpoint, path)
