"""A training run: build everything from the Hydra config and fit (``run``), find the checkpoint to resume from
(``resume``), the run's callbacks (``callbacks``), the SLURM job it may run in (``slurm``), the lock on its
folder (``run_lock``) and its CSV log, continued across a resume (``csv_log``)."""

from .run import run_training

__all__ = ["run_training"]
