"""Resume a run exactly: which checkpoint to continue from (``ckpt_path=auto``).

What makes the continuation exact is saved by each owner: Lightning (weights, optimizers, LR schedulers, loop
counters, callbacks), the data module (its seed and the position in the epoch: the training data is a pure
function of (seed, epoch, rank, sample index), whatever the number of workers, ``SeededSampler``), the model (its
image pools, per DDP rank) and the ``RunState`` callback (every rank's random states, the W&B run id:
``checkpoints/run_state.py``); ``ContinueCSVLog`` keeps the rows of ``csv/metrics.csv`` up to the checkpoint
(``csv_log.py``).

Sanity-check validation runs inside Lightning's ``isolate_rng``, so it does not disturb the restored states.
End-of-epoch and mid-epoch checkpoints (SIGTERM; under SLURM a requeue signal, then ``scontrol requeue``) resume
bitwise on CPU, with any number of workers before and after (``tests/test_resume.py``, ``tests/test_slurm.py``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cyclegan_lightning.errors import CheckpointError
from cyclegan_lightning.run_layout import RunLayout
from cyclegan_lightning.training import slurm

log = logging.getLogger(__name__)

AUTO = "auto"
RESOLVED_ENV = "CYCLEGAN_RESUMED_FROM"  # rank 0's choice, inherited by the DDP processes it launches


# ---- which checkpoint ------------------------------------------------------------------------------------------
# The files of a run folder a run can continue from: ``last.ckpt`` (each epoch's end, and the checkpoint
# ``CheckpointOnSignal`` writes on SIGTERM or a SLURM requeue signal) and ``hpc_ckpt_<n>.ckpt`` (what Lightning's own
# SLURM handler writes into the run folder, ``trainer.default_root_dir``, where it is in charge). The newest wins.
RESUME_FILES = (f"{RunLayout.CHECKPOINTS}/{RunLayout.LAST}", "hpc_ckpt_*.ckpt")


def newest_resume_point(folder: str | Path, recursive: bool = False) -> Path | None:
    """The newest (by modification time) of the ``RESUME_FILES`` of run folder ``folder``, or of every run folder
    under it (``recursive``), or None."""
    prefix = "**/" if recursive else ""
    found = [p for pattern in RESUME_FILES for p in Path(folder).glob(prefix + pattern) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def find_resume_checkpoint(
    ckpt_path: str | None,
    log_dir: str | Path | None = None,
    name: str | None = None,
    multirun: bool = False,
    output_dir: str | Path | None = None,
) -> str | None:
    """``None`` -> ``None`` (``auto`` in a requeued SLURM job); ``auto`` -> the newest resume point of ``name`` or
    ``None``; a file -> its path.

    Lightning's own ``ckpt_path="last"`` only looks in the current run's folder, which Hydra makes new for each
    launch, so it would silently start from scratch; ``auto`` searches the whole experiment. In a multirun, each
    job resumes only from its own folder (``output_dir``): a job re-queued by the SLURM launcher continues
    itself, and the jobs of a new sweep start fresh instead of all resuming one checkpoint. A job SLURM has
    requeued (``SLURM_RESTART_COUNT`` > 0) resumes even if its command line forgot ``ckpt_path=auto``: starting
    over would write over the checkpoint it was requeued to continue from.
    """
    if ckpt_path is None and slurm.restart_count() > 0:
        log.warning("SLURM job %s was requeued: resuming as with ckpt_path=auto", slurm.job_id())
        ckpt_path = AUTO
    if ckpt_path is None:
        return None
    if str(ckpt_path) == AUTO:
        inherited = os.environ.get(RESOLVED_ENV)
        if inherited is not None and os.environ.get("LOCAL_RANK", "0") != "0":
            return inherited or None  # a DDP child: use what rank 0 chose
        if multirun:
            where, recursive = Path(output_dir), False
        else:
            where, recursive = Path(log_dir) / name, True
        found = newest_resume_point(where, recursive)
        os.environ[RESOLVED_ENV] = str(found or "")
        if found is None:
            log.warning("ckpt_path=auto: no last.ckpt or hpc_ckpt_*.ckpt under %s; starting from scratch", where)
            return None
        log.info("ckpt_path=auto: resuming from %s", found)
        return str(found)
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: no such file. Give the path of a .ckpt written by train.py, or "
            "ckpt_path=auto for the newest last.ckpt of this experiment."
        )
    return str(path)
