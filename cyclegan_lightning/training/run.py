"""Build the objects a composed Hydra config describes and run ``Trainer.fit``; ``train.py`` is a thin wrapper."""

from __future__ import annotations

import logging

import hydra
import lightning as L
from lightning import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from cyclegan_lightning.checkpoints.loading import safe_load
from cyclegan_lightning.checkpoints.run_state import WANDB_RUN_ID, RunState
from cyclegan_lightning.cli import is_multirun
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.hardware import warn_if_emulated_bf16
from cyclegan_lightning.training.callbacks import CheckpointOnSignal, DistinctRankSeeds
from cyclegan_lightning.training.csv_log import ContinueCSVLog
from cyclegan_lightning.training.identity_warmup import IdentityWarmup
from cyclegan_lightning.training.resume import find_resume_checkpoint
from cyclegan_lightning.training.run_lock import RunDirLock

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry with a ``_target_`` in a config group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [
        hydra.utils.instantiate(entry)
        for entry in group.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def resolve_ckpt_path(ckpt_path: str | None, cfg: DictConfig | None = None) -> str | None:
    """Check a resume checkpoint exists before anything is built, so a typo fails in a second, not an hour.

    ``auto``: the newest ``last.ckpt`` (or ``hpc_ckpt_*.ckpt``) of this experiment under ``<paths.log_dir>/<name>/``
    (see ``resume.py``).
    """
    log_dir = cfg.paths.log_dir if cfg is not None else None
    name = cfg.get("name") if cfg is not None else None
    output_dir = cfg.paths.output_dir if cfg is not None else None
    return find_resume_checkpoint(ckpt_path, log_dir, name, multirun=is_multirun(), output_dir=output_dir)


def _refuse_multirun_spawning_ddp(trainer: L.Trainer) -> None:
    """Lightning starts DDP ranks > 0 by re-running this script's command line; in a Hydra multirun each of them
    would re-run the whole sweep (Lightning #11300, hydra #2070). Stop before that happens."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if is_multirun() and isinstance(launcher, _SubprocessScriptLauncher):
        raise ConfigError(
            "a Hydra multirun (-m) cannot use a DDP trainer that starts its own processes: every extra process "
            "would re-run the whole sweep. Run the sweep points one at a time (for v in 5 10; do python train.py "
            "trainer=ddp model.lambda_cycle=$v; done), or launch with hydra/launcher=slurm or torchrun, which start "
            "the processes themselves (docs/scaling.md)."
        )


def _is_wandb(target: str) -> bool:
    """Whether a logger config's ``_target_`` names W&B's logger (or a subclass of it)."""
    try:
        return issubclass(hydra.utils.get_class(target), WandbLogger)
    except Exception:  # an unknown target fails later, where it is instantiated, with Hydra's message
        return False


def _continue_wandb_run(cfg: DictConfig, checkpoint: dict) -> None:
    """When resuming, point a W&B logger with no explicit id at the run stored in the checkpoint."""
    run_id = checkpoint.get(WANDB_RUN_ID)
    if not run_id or not cfg.get("logger"):
        return
    for entry in cfg.logger.values():
        if isinstance(entry, DictConfig) and _is_wandb(entry.get("_target_", "")) and not entry.get("id"):
            with open_dict(entry):
                entry.id, entry.resume = run_id, "allow"
            log.info("W&B: continuing run %s", run_id)


def _finish_wandb(loggers: list[Logger], exit_code: int, preempted: bool = False) -> None:
    """End this job's W&B run (one run per multirun job); a non-zero exit code marks it failed."""
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if wandb.run is not None:
        if preempted:
            wandb.run.mark_preempting()  # shown as preempted, not failed; resume continues it
        wandb.finish(exit_code=exit_code)


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Seed, build data, model, callbacks, loggers and trainer from ``cfg``, fit, and return the final metrics.

    The run folder is locked for the whole call (a second run there is refused) and released however it ends,
    config and data errors included."""
    with RunDirLock(cfg.paths.output_dir):
        return _fit(cfg)


def _fit(cfg: DictConfig) -> dict[str, float]:
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg)
    if ckpt_path is not None:  # unsafe pickle or not a checkpoint: refused before anything runs. Memory-mapped, so
        # only what is looked at is read; the format and architecture are checked by the model when fit loads it
        _continue_wandb_run(cfg, safe_load(ckpt_path, mmap=True))
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    callbacks.append(RunState())  # every rank's random states and the W&B run id, in every checkpoint
    callbacks.append(IdentityWarmup())  # model.identity_init_steps (0: nothing)
    callbacks.append(ContinueCSVLog())  # the CSV log's rows in every checkpoint; on resume its file continues
    if cfg.get("seed") is not None:
        callbacks.append(DistinctRankSeeds(cfg.seed))  # DDP: each rank its own network randomness
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    _refuse_multirun_spawning_ddp(trainer)
    warn_if_emulated_bf16(trainer.precision, trainer.strategy.root_device.type)  # explicit bf16 on a CPU without it
    world_size = trainer.num_devices * trainer.num_nodes
    effective_batch = cfg.data.batch_size * world_size  # data.batch_size is per device
    log.info("batch size %d per device x %d device(s) = %d per step", cfg.data.batch_size, world_size, effective_batch)
    for logger in loggers:
        hparams = OmegaConf.to_container(cfg, resolve=True)
        hparams |= {"world_size": world_size, "effective_batch_size": effective_batch}
        logger.log_hyperparams(hparams)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)  # never unpickle code
    except SIGTERMException:  # CheckpointOnSignal saved a checkpoint; exit cleanly so a requeue resumes
        _finish_wandb(loggers, exit_code=1, preempted=True)
        for callback in callbacks:  # last: SLURM ends the job as soon as it requeues it
            if isinstance(callback, CheckpointOnSignal):
                callback.requeue_if_asked()
        raise
    except BaseException:
        _finish_wandb(loggers, exit_code=1)
        raise
    _finish_wandb(loggers, exit_code=0)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        saved = [c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")]
        if saved:
            log.info("checkpoints: %s", ", ".join(saved))
        log.info("run directory: %s", cfg.paths.output_dir)
    return metrics
