"""Build the objects a composed Hydra config describes and run ``Trainer.fit``; ``train.py`` is a thin wrapper."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from cyclegan_lightning.errors import CheckpointError

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry with a ``_target_`` in a config group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def resolve_ckpt_path(ckpt_path: str | None) -> str | None:
    """Check a resume checkpoint exists before anything is built, so a typo fails in a second, not an hour."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such file. Give the path of a .ckpt written by train.py.")
    return str(path)


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Seed, build data, model, callbacks, loggers and trainer from ``cfg``, fit, and return the final metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"))
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.last_model_path:
            log.info("checkpoints: last %s, best %s", ckpt.last_model_path, ckpt.best_model_path)
        log.info("run directory: %s", cfg.paths.output_dir)
    return metrics
