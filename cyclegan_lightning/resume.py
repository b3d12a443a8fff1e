"""Resume a run exactly: which checkpoint (``ckpt_path=auto``), and the state Lightning does not save by itself.

Lightning's checkpoint holds the weights, both optimizers, the LR schedulers, the loop counters and the callbacks.
The data module adds its seed and the position in the epoch (``UnpairedDataModule.state_dict``): the training data
is a pure function of (seed, epoch, rank, sample index), whatever the number of workers (``SeededSampler``), so a
resumed run draws the samples, B partners, crops and flips an uninterrupted one would, from the next batch on.
``CycleGAN.on_save_checkpoint`` adds, through :func:`save_run_state`:

- the random states of torch (CPU and CUDA), numpy and python, taken when the checkpoint is written (the
  networks' own draws, e.g. dropout; data loading never touches them, and the image pools carry their own
  generator);
- under DDP, the image pools and random states of *every* rank (gathered to rank 0, which writes the file), so
  each rank gets its own back; resuming on a different number of processes gives every rank rank 0's pools;
- the W&B run id, so the resumed run continues the same W&B run.

Sanity-check validation runs inside Lightning's ``isolate_rng``, so it does not disturb the restored states.
End-of-epoch and mid-epoch checkpoints (SIGTERM, SIGUSR1 on SLURM) resume bitwise on CPU, with any number of
workers before and after (``tests/test_resume.py``).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from cyclegan_lightning.errors import CheckpointError

log = logging.getLogger(__name__)

AUTO = "auto"
RESOLVED_ENV = "CYCLEGAN_RESUMED_FROM"  # rank 0's choice, inherited by the DDP processes it launches


# ---- which checkpoint ------------------------------------------------------------------------------------------
def find_last_checkpoint(log_dir: str | Path, name: str) -> Path | None:
    """Newest ``last.ckpt`` (by modification time) of experiment ``name``: ``<log_dir>/<name>/**/checkpoints/``."""
    root = Path(log_dir) / name
    found = [p for p in root.glob("**/checkpoints/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_ckpt_path(
    ckpt_path: str | None,
    log_dir: str | Path | None = None,
    name: str | None = None,
    multirun: bool = False,
    output_dir: str | Path | None = None,
) -> str | None:
    """``None`` -> ``None``; ``auto`` -> newest ``last.ckpt`` of ``name`` or ``None``; a file -> its path.

    Lightning's own ``ckpt_path="last"`` only looks in the current run's folder, which Hydra makes new for each
    launch, so it would silently start from scratch; ``auto`` searches the whole experiment. In a multirun, each
    job resumes only from its own folder (``output_dir``): a job re-queued by the SLURM launcher continues
    itself, and the jobs of a new sweep start fresh instead of all resuming one checkpoint.
    """
    if ckpt_path is None:
        return None
    if str(ckpt_path) == AUTO:
        inherited = os.environ.get(RESOLVED_ENV)
        if inherited is not None and os.environ.get("LOCAL_RANK", "0") != "0":
            return inherited or None  # a DDP child: use what rank 0 chose
        if multirun:
            own = Path(output_dir) / "checkpoints" / "last.ckpt"
            found, where = (own if own.is_file() else None), own.parent
        else:
            found, where = find_last_checkpoint(log_dir, name), Path(log_dir) / name
        os.environ[RESOLVED_ENV] = str(found or "")
        if found is None:
            log.warning("ckpt_path=auto: no last.ckpt under %s; starting from scratch", where)
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


def read_wandb_run_id(ckpt_path: str) -> str | None:
    """The W&B run id stored in a checkpoint by :func:`save_run_state` (``None`` if it has none)."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {ckpt_path}: {exc}. Is it a complete .ckpt file?") from exc
    return checkpoint.get("wandb_run_id")


# ---- random states -----------------------------------------------------------------------------------------------
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


# ---- checkpoint hooks (called by CycleGAN.on_save_checkpoint / on_load_checkpoint) --------------------------------
def _rank_state(module: LightningModule) -> dict[str, Any]:
    return {
        "image_pools": {"a": module.pool_a.state_dict(), "b": module.pool_b.state_dict()},
        "rng_states": capture_rng_states(),
    }


def save_run_state(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """Add random states, per-rank pools (DDP) and the W&B run id to ``checkpoint``.

    Lightning calls ``on_save_checkpoint`` on every rank before rank 0 writes the file, so the gather below is
    matched on all ranks.
    """
    trainer = module._trainer
    checkpoint["rng_states"] = capture_rng_states()
    if trainer is None:
        return
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():  # pools + RNG of every rank
        gathered: list | None = [None] * trainer.world_size if trainer.global_rank == 0 else None
        dist.gather_object(_rank_state(module), gathered, dst=0)
        checkpoint["rank_states"] = gathered
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            checkpoint["wandb_run_id"] = logger.version


def load_run_state(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """Restore this rank's pools and random states when resuming ``fit`` (not when loading for inference)."""
    trainer = module._trainer
    if trainer is None or trainer.state.fn != "fit":
        return  # load_from_checkpoint / predict: leave the global random state alone
    ranks = checkpoint.get("rank_states")
    state = None
    if ranks and len(ranks) == trainer.world_size:
        state = ranks[trainer.global_rank]
    elif ranks or trainer.world_size > 1:
        saved = len(ranks) if ranks else 1
        rank_zero_warn(
            f"checkpoint written by {saved} process(es), resumed on {trainer.world_size}: every rank starts from "
            "rank 0's image pools and random states (training continues, but not as the original run would have)."
        )
    if state is not None:
        module.pool_a.load_state_dict(state["image_pools"]["a"])
        module.pool_b.load_state_dict(state["image_pools"]["b"])
        restore_rng_states(state["rng_states"])
    elif "rng_states" in checkpoint:
        restore_rng_states(checkpoint["rng_states"])


# ---- pre-emption ---------------------------------------------------------------------------------------------------
class CheckpointOnSigterm(Callback):
    """On SIGTERM (sent by schedulers before pre-emption), save ``dirpath/filename`` and let the run end cleanly.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the end of the current batch (on every rank); this
    callback writes the checkpoint then, atomically, so ``ckpt_path=auto`` continues from the next batch.
    Lightning's ``OnExceptionCheckpoint`` does not fit: it saves on every exception (a crash would write over
    ``last.ckpt``) and deletes its file at ``teardown``.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            log.warning("SIGTERM: saved %s at epoch %d; continue with ckpt_path=auto", self.path, trainer.current_epoch)


class DistinctRankSeeds(Callback):
    """Under DDP, reseed rank ``r`` with ``seed + r`` once the processes exist (``setup``).

    ``seed_everything`` gives every rank the same seed, which is right for building identical networks, but the
    networks' own random draws (dropout) should differ between ranks (the data's already do: ``SeededSampler``).
    Single-process runs are left untouched; a resumed run restores each rank's saved states afterwards.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size > 1:  # not seed_everything: PL_GLOBAL_SEED must stay equal on all ranks, since
            seed = self.seed + trainer.global_rank  # the DistributedSampler's shared shuffle is seeded from it
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
