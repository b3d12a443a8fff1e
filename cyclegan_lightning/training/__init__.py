"""A training run: build everything from the Hydra config and fit (``run``), find the checkpoint to resume from
(``resume``), the run's callbacks (``callbacks``), the SLURM job it may run in (``slurm``) and the lock on its
folder (``run_lock``)."""

from .run import run_training

__all__ = ["run_training"]
