"""One training run per output folder: a second run started in the same folder is refused, not interleaved.

Two runs writing ``checkpoints/last.ckpt``, ``samples/`` and ``csv/metrics.csv`` of one folder would silently mix
their files (and ``ckpt_path=auto`` would resume a hybrid). ``RunDirLock`` holds ``filelock.FileLock`` (an exclusive
``flock``) on ``<output_dir>/.run.lock`` for the whole run; the kernel drops it when the process ends, however it
ends, so a crashed run never leaves a stale lock. Who holds it (pid, host, start time) is written beside it, in
``.run.owner``, for the message a second run gets.

Only global rank 0 locks: the other DDP ranks are the same run (Lightning re-launches them into rank 0's folder).
Within one process the lock is re-entrant (``FileLock`` counts), so a resumed run in the same Python process (tests,
notebooks) works. On file systems without ``flock`` (some network mounts) the lock is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from cyclegan_lightning.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
OWNER_NAME = ".run.owner"


def global_rank_from_env() -> int:
    """This process's global rank before any process group exists, read as Lightning reads it (``RANK``, then
    ``LOCAL_RANK``, then ``SLURM_PROCID``: inside an interactive SLURM allocation ``SLURM_PROCID`` is 0 for every
    rank Lightning spawns). A node rank above 0 makes any process a non-zero rank."""
    rank = 0
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(var):
            rank = int(os.environ[var])
            break
    return rank + int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)) or 0)


class RunDirLock:
    """Exclusive lock of a run folder held by this process (``acquire`` / ``release``, or a ``with`` block)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self._lock = FileLock(self.path, timeout=0, is_singleton=True)  # one object per file in this process

    def acquire(self) -> RunDirLock:
        """Take the lock (again, if this process holds it); ``ConfigError`` if another process holds it."""
        if global_rank_from_env() != 0:
            return self  # DDP ranks > 0 are part of rank 0's run and write nothing here
        self.folder.mkdir(parents=True, exist_ok=True)
        first = not self._lock.is_locked
        try:
            self._lock.acquire()
        except Timeout:
            owner = self.folder / OWNER_NAME
            holder = owner.read_text(errors="replace").strip() if owner.is_file() else ""
            raise ConfigError(
                f"another training run ({holder or 'unknown process'}) is using the output folder {self.folder}. Two "
                "runs in one folder would overwrite each other's checkpoints and samples: wait for it to finish, or "
                "give this run its own folder (hydra.run.dir=...; the default is a new timestamped folder per run)."
            ) from None
        except (NotImplementedError, OSError) as exc:  # no flock here (some network file systems)
            log.warning("cannot lock %s (%s); not protected against a second run in this folder", self.path, exc)
            return self
        if first:
            (self.folder / OWNER_NAME).write_text(
                f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
            )
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
