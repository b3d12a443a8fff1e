"""One training run per output folder: a second run started in the same folder is refused, not interleaved.

Two runs writing ``checkpoints/last.ckpt``, ``samples/`` and ``csv/metrics.csv`` of one folder would silently mix
their files (and ``ckpt_path=auto`` would resume a hybrid). ``RunDirLock`` takes an exclusive ``flock`` on
``<output_dir>/.run.lock`` for the whole run; the kernel drops it when the process ends, however it ends, so a
crashed run never leaves a stale lock. The lock file records who holds it (pid, host, start time) for the message.

Only global rank 0 locks: the other DDP ranks are the same run (Lightning re-launches them into rank 0's folder).
Within one process the lock is re-entrant, so a resumed run in the same Python process (tests, notebooks) works.
On file systems without ``flock`` (some network mounts) the lock is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from cyclegan_lightning.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
_held: dict[str, "RunDirLock"] = {}  # folder -> the lock this process holds there


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(var):
            return int(os.environ[var])
    local, node = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return local + node  # 0 only for the first process of the first node


class RunDirLock:
    """Exclusive lock of a run folder held by this process (``acquire`` / ``release``, or a ``with`` block)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0

    @classmethod
    def acquire_for(cls, folder: str | Path) -> "RunDirLock":
        """The lock of ``folder`` for this run; raises ``ConfigError`` if another process holds it."""
        key = str(Path(folder).resolve())
        lock = _held.get(key) or cls(folder)
        lock.acquire()
        return lock

    def acquire(self) -> "RunDirLock":
        if _global_rank() != 0:
            return self  # DDP ranks > 0 are part of rank 0's run and write nothing here
        if self._fd is not None:
            self._depth += 1
            return self
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise ConfigError(
                f"another training run ({holder}) is using the output folder {self.folder}. Two runs in one folder "
                "would overwrite each other's checkpoints and samples: wait for it to finish, or give this run its "
                "own folder (hydra.run.dir=...; the default is a new timestamped folder per run)."
            ) from None
        except OSError as exc:  # flock not supported here (some network file systems)
            os.close(fd)
            log.warning("cannot lock %s (%s); not protected against a second run in this folder", self.path, exc)
            return self
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)  # fmt: skip
        self._fd, self._depth = fd, 1
        _held[str(self.folder)] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        _held.pop(str(self.folder), None)

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
