"""The run's CSV log (``<run>/csv/metrics.csv``) carried across a resume, so plots, model cards and the leaderboard
see every epoch of a pre-empted or requeued run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when its writer is created (``_ExperimentWriter.
_check_log_dir_exists``), so a run resumed into its own folder (a requeued SLURM job, ``ckpt_path=auto``) keeps only
the rows logged after the resume. Here:

- ``ContinueCSVLog`` (a callback ``run_training`` always adds) stores in every checkpoint how many rows each
  ``ResumableCSVLogger`` had written when it was saved (``CSV_LOG_ROWS``). On resume it has the logger start its
  file from those rows of the checkpoint's run (this folder, or the folder the checkpoint came from), plus the later
  rows whose step is below the checkpoint's logger step: the epoch-end metrics (``train/lr``) that Lightning logs
  just after its end-of-epoch checkpoint, which the resumed run does not log again. Rows of work the resumed run
  re-does (after an older checkpoint, a SIGKILL) are dropped, so none appears twice. Checkpoints without the count
  (written before it existed) are cut by step alone.
- A run that does not resume (no ``ckpt_path``) replaces an existing file, as Lightning's does, at its first row.

New metric keys still widen the header (Lightning's writer rewrites the file); that rewrite and the trimmed file are
written through ``atomic_open``, so a crash leaves the old file or the new one. Rows are appended in place, as by
Lightning: an append cut short leaves a partial last row, after every checkpoint's count, which a resume drops.
Only global rank 0 writes, as with Lightning's logger.
"""

from __future__ import annotations

import csv
import itertools
import logging
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_warn
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cyclegan_lightning.checkpoints.atomic import atomic_open
from cyclegan_lightning.run_layout import RunLayout

log = logging.getLogger(__name__)

CSV_LOG_ROWS = "csv_log_rows"  # checkpoint key: {logger name: rows of its metrics.csv when the checkpoint was saved}


class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's writer that keeps an existing ``metrics.csv`` until it knows whether the run resumes, counts the
    rows of its file, and rewrites the file atomically."""

    def __init__(self, log_dir: str) -> None:
        self.rows = 0  # rows in the file: those kept on resume and those appended since
        self._replace_existing = True  # a run that does not resume starts the file afresh (Lightning's behaviour)
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes ``metrics.csv`` here; whether its rows stay is only known once a checkpoint loads."""

    def continue_from(self, source: Path, rows: int | None, before_step: int | None) -> None:
        """Start the file with the first ``rows`` rows of ``source`` and the later ones whose step is below
        ``before_step`` (either may be None: not known); ``source`` may be this writer's own file."""
        if not source.is_file() or (rows is None and before_step is None):
            return  # nothing to keep: this file (if any) is replaced at the first row, as by Lightning
        with open(source, newline="") as f:
            reader = csv.DictReader(f)
            kept = list(itertools.islice(reader, rows or 0))
            if before_step is not None:
                kept += [row for row in reader if _step(row) is not None and _step(row) < before_step]
        if not kept:
            return
        # the header of the kept rows: the keys Lightning's writer would have seen up to the checkpoint
        self.metrics_keys = sorted({key for row in kept for key, value in row.items() if key and value})
        self._write_whole(self.metrics_keys, kept)
        self._replace_existing = False
        self.rows = len(kept)
        log.info("CSV log: continuing %s with its %d rows up to the checkpoint", source, self.rows)

    def save(self) -> None:
        if not self.metrics:
            return
        if self._replace_existing and self._fs.isfile(self.metrics_file_path):
            rank_zero_warn(f"{self.metrics_file_path} of an earlier run (not resumed) is replaced by this run's log")
            self._fs.rm_file(self.metrics_file_path)
        self._replace_existing = False
        written = len(self.metrics)
        super().save()
        self.rows += written

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """New metric keys: the whole file again with the wider header, atomically (Lightning truncates it first)."""
        if not isinstance(self._fs, LocalFileSystem):
            super()._rewrite_with_new_header(fieldnames)
            return
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self._write_whole(fieldnames, rows)

    def _write_whole(self, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic_open(self.metrics_file_path, "w") as f:
            f.reconfigure(newline="")  # csv writes its own line endings
            writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def _step(row: dict[str, str]) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` whose ``metrics.csv`` continues across a resume (see the module docstring); a run
    that does not resume writes exactly what Lightning's does."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @property
    def rows_written(self) -> int:
        """Rows in this rank's ``metrics.csv`` after flushing those still buffered (0 on ranks other than 0)."""
        if not isinstance(self._experiment, ContinuingExperimentWriter):
            return 0
        self.save()
        return self._experiment.rows

    @rank_zero_only
    def continue_from(self, ckpt_path: str | Path, rows: int | None, before_step: int | None) -> None:
        """Resuming from ``ckpt_path``: keep the rows of its run's log up to it (``ContinuingExperimentWriter``)."""
        ckpt_path = Path(ckpt_path).resolve()
        own = Path(self.log_dir) / ContinuingExperimentWriter.NAME_METRICS_FILE
        if ckpt_path.is_relative_to(Path(self.save_dir).resolve()):
            source = own  # resumed into its own run folder
        else:  # resumed into a new folder: start from the checkpoint's run's log (checkpoints/x.ckpt, hpc_ckpt_*)
            layout = RunLayout.of_checkpoint(ckpt_path) or RunLayout(ckpt_path.parent)
            source = layout.metrics_csv
        self.experiment.continue_from(source, rows, before_step)


def _logger_step(checkpoint: dict[str, Any]) -> int | None:
    """The step Lightning's loggers had reached at the checkpoint (``_batches_that_stepped``, kept in every
    checkpoint since Lightning 1.6.5), or None."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"])
    except (KeyError, TypeError, ValueError):
        return None


class ContinueCSVLog(Callback):
    """Every checkpoint records how many rows each ``ResumableCSVLogger`` had written; a resume continues its log
    from there (see the module docstring)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        rows = {lg.name: lg.rows_written for lg in trainer.loggers if isinstance(lg, ResumableCSVLogger)}
        if rows and trainer.is_global_zero:  # rank 0 writes the file and the checkpoint
            checkpoint[CSV_LOG_ROWS] = rows

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        rows = checkpoint.get(CSV_LOG_ROWS) or {}
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger) and trainer.ckpt_path:
                logger.continue_from(trainer.ckpt_path, rows.get(logger.name), _logger_step(checkpoint))
