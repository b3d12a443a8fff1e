"""State kept per DDP rank in a checkpoint (image pools, random states): gathered to rank 0, which writes the file,
and handed back to each rank on resume."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from lightning import Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn


def gather_per_rank(trainer: Trainer | None, value: Any) -> list[Any]:
    """``[value of rank 0, rank 1, ...]`` on rank 0 (the one that writes checkpoints), ``[value]`` without DDP.

    Lightning calls the save hooks on every rank before rank 0 writes, so the collective is matched everywhere.
    """
    if trainer is None or trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list | None = [None] * trainer.world_size if trainer.global_rank == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered or []


def this_rank(trainer: Trainer, saved: list[Any], what: str) -> Any:
    """This rank's entry of a per-rank list saved by ``gather_per_rank``; rank 0's, with a warning, when the run
    resumes on another number of processes."""
    if len(saved) == trainer.world_size:
        return saved[trainer.global_rank]
    rank_zero_warn(
        f"checkpoint written by {len(saved)} process(es), resumed on {trainer.world_size}: every rank starts from "
        f"rank 0's {what} (training continues, but not as the original run would have)."
    )
    return saved[0]
