"""What the command scripts (train, predict, evaluate, leaderboard, export, plot) share: mandatory settings checked
before any work, errors users can fix shown as one line with exit code 2, and where a checkpoint's reports go by
default."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from cyclegan_lightning.errors import ConfigError, CycleGANError
from cyclegan_lightning.run_layout import RunLayout

T = TypeVar("T")


def require(cfg: DictConfig, command: str) -> None:
    """Raise one ``ConfigError`` naming every mandatory (``???``) setting left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        example = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(
            f"{command}.py needs {', '.join(missing)}: python {command}.py {example} (see conf/{command}.yaml)"
        )


def is_multirun() -> bool:
    """True inside a job of a Hydra sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_command(command: str, work: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """``work(cfg)`` after ``require``; a ``CycleGANError`` is logged as one line and exits with code 2 (in a sweep
    it is raised instead: Hydra records that job as failed and the sweep goes on, Optuna's max_failure_rate)."""
    try:
        require(cfg, command)
        return work(cfg)
    except CycleGANError as exc:  # a problem the user can fix: say what, without a traceback
        logging.getLogger(command).error("%s", exc)
        if is_multirun():
            raise
        sys.exit(2)


def output_dir_for(ckpt_path: str | Path, kind: str) -> Path:
    """``<run>/<kind>/<checkpoint name>/`` for a run's checkpoint (``<run>/checkpoints/x.ckpt``), else
    ``./<kind>/<checkpoint name>/``: reports of each checkpoint stay apart and beside their run.
    ``pretrained:<name>`` gives ``./<kind>/pretrained-<name>/`` (no ``:`` in a folder name)."""
    run = RunLayout.of_checkpoint(ckpt_path)
    return (run.root if run else Path(".")) / kind / Path(str(ckpt_path).replace(":", "-")).stem
