"""A callback that warns once when a run collapses or stops translating, from the health signals the models log
(computed in ``metrics/health.py`` from tensors their steps already have, no extra forward pass):

- ``val/health/change_{a2b,b2a}``: mean |G(x) - x| over the validation images, in [-1, 1] units. Near 0 means the
  generator has drifted to the identity: it no longer translates.
- ``val/health/diversity_{a2b,b2a}``: how much the translations differ from each other, relative to how much
  their inputs do (1 = as diverse as the inputs; near 0 = one output for every input: mode collapse).
- ``train/d/acc_{real,fake}_{a,b}``: the fraction of patch decisions each discriminator gets right in its
  training step (not logged for ``gan_mode=wgangp``, whose critic has no decision threshold).

``HealthMonitor`` reads the validation signals and warns once per problem and direction, in the log and, when a
W&B logger is attached, through ``wandb.alert``. docs/quality.md says what healthy looks like for each signal.
"""

from __future__ import annotations

import logging

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from cyclegan_lightning.directions import DIRECTIONS

log = logging.getLogger(__name__)

ADVICE = {
    "collapse": (
        "the {direction} generator gives nearly the same output for every input (val/health/diversity_{direction} "
        "= {value:.3f}, below {threshold}): mode collapse. What users usually change: a lower model.lr, "
        "gan_mode=lsgan if another mode is set, a larger model.pool_size (the reference uses 50), a weaker "
        "discriminator (model.discriminator.ndf or n_layers), more or more varied training images."
    ),
    "identity": (
        "the {direction} generator has stopped translating: its outputs differ from its inputs by "
        "{value:.4f} on average (val/health/change_{direction}, [-1, 1] units, below {threshold}). What users "
        "usually change: a lower model.lambda_identity (0 turns the identity loss off) or model.lambda_cycle, a "
        "stronger discriminator (model.discriminator.ndf or n_layers), or a higher model.lr; also check that "
        "the two domains really differ."
    ),
}


class HealthMonitor(Callback):
    """Warns once per problem and direction when the validation health signals cross a threshold.

    Checks run after each validation (not the sanity check) from ``warmup_epochs + 1`` on: at initialisation a
    generator's output is nearly constant, which is not a collapse.
    """

    def __init__(
        self,
        min_diversity: float = 0.1,  # val/health/diversity below this: collapse
        min_change: float = 0.01,  # val/health/change below this ([-1, 1] units; 0.01 ~ 1.3 of 255 levels): identity
        warmup_epochs: int = 1,  # epochs before the first check
    ):
        self.min_diversity, self.min_change, self.warmup_epochs = min_diversity, min_change, warmup_epochs
        self.warned: set[tuple[str, str]] = set()

    def problems(self, metrics: dict[str, torch.Tensor]) -> list[tuple[str, str, float, float]]:
        """(problem, direction, value, threshold) for every signal in ``metrics`` past its threshold."""
        found = []
        for direction in DIRECTIONS:
            for problem, key, threshold in (
                ("collapse", f"val/health/diversity_{direction}", self.min_diversity),
                ("identity", f"val/health/change_{direction}", self.min_change),
            ):
                value = metrics.get(key)
                if value is not None and float(value) < threshold:  # NaN (too few images) never warns
                    found.append((problem, direction, float(value), threshold))
        return found

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch < self.warmup_epochs:
            return
        for problem, direction, value, threshold in self.problems(trainer.callback_metrics):
            if (problem, direction) in self.warned:
                continue
            self.warned.add((problem, direction))
            text = f"epoch {trainer.current_epoch + 1}: " + ADVICE[problem].format(
                direction=direction, value=value, threshold=threshold
            )
            if trainer.is_global_zero:
                log.warning(text)
                for logger in trainer.loggers:
                    if isinstance(logger, WandbLogger):
                        import wandb

                        logger.experiment.alert(
                            title=f"CycleGAN {problem} ({direction})", text=text, level=wandb.AlertLevel.WARN
                        )
