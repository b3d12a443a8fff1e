"""The state of a run that is not any model's: random states of every rank and the W&B run id.

``RunState`` is a callback (``run_training`` always adds it), so the LightningModules know nothing of runs. On
every save it stores, per rank (gathered to rank 0 under DDP, which writes the file), the random states of torch
(CPU, and CUDA when used), numpy and python: the networks' own draws (dropout) continue as they would have. Data
loading never touches them (``SeededSampler``), and the image pools are the model's own state. It also stores the
W&B run id, so ``ckpt_path=...`` continues the same W&B run (``training/resume.py``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from cyclegan_lightning.checkpoints.per_rank import gather_per_rank, this_rank

WANDB_RUN_ID = "wandb_run_id"  # checkpoint key


def capture_rng_states() -> dict[str, Any]:
    """torch (CPU, and CUDA when used), numpy and python random states as plain values and tensors.

    numpy's key array is stored as a tensor so that checkpoints stay loadable with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunState(Callback):
    """Save and restore every rank's random states, and the W&B run id (see the module docstring)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = gather_per_rank(trainer, capture_rng_states())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                checkpoint[WANDB_RUN_ID] = logger.version

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("rng_states")  # Lightning calls this when resuming fit only
        if isinstance(saved, dict):  # format 1: one state (rank 0's); the others were in "rank_states"
            ranks = checkpoint.get("rank_states")
            saved = [r["rng_states"] for r in ranks] if ranks else [saved]
        if saved:
            restore_rng_states(this_rank(trainer, saved, "random states"))
