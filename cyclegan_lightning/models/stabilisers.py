"""Stabiliser hooks shared by the translation models (CycleGAN, CUT): all off by default, so the reference
training math is untouched unless a flag is set (docs/stabilisers.md).

- ``diffaugment`` / ``ada_*``: every discriminator input goes through ``judge`` (``augment.py``);
- ``lambda_r1``: an R1 penalty on real images in each discriminator's loss (``losses.r1_penalty``);
- ``ema_decay``: an EMA of each generator's weights (``ema.py``), used by ``forward`` outside training.

``UnpairedTranslationModel`` mixes this class in, so every model family has the hooks. A model declares the
hyperparameters (``diffaugment``, ``ada_target``, ``ada_interval``, ``ada_kimg``, ``ema_decay``, ``lambda_r1``; any it
leaves out stay off), calls ``init_stabilisers()`` once its generators exist, judges every discriminator input with
``judge`` and calls ``regularise_discriminator`` in each discriminator loss; the phases of its training step
(``phases.py``) call ``after_optimizer_step``. ``forward`` (in the base) uses ``averaged_generator``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.models.augment import DiscriminatorAugment
from cyclegan_lightning.models.ema import GeneratorEMA
from cyclegan_lightning.models.losses import r1_penalty


class StabiliserHooks:
    """Mixin for a LightningModule with generators by direction and discriminators judging each domain."""

    def init_stabilisers(self) -> None:
        """Build what the stabiliser hyperparameters ask for (after the generators: the EMA copies them)."""
        hp = self.hparams
        diffaugment, ada_target, ema_decay = hp.get("diffaugment"), hp.get("ada_target"), hp.get("ema_decay")
        lambda_r1 = hp.get("lambda_r1", 0.0)
        if ada_target is not None and not diffaugment:
            raise ConfigError("model.ada_target adapts DiffAugment's probability: set model.diffaugment too")
        if lambda_r1 < 0:
            raise ConfigError(f"model.lambda_r1 must be >= 0, got {lambda_r1}")
        # (instance attributes, not class ones: nn.Module would otherwise find the class's None before a submodule)
        self.augment = None
        if diffaugment:
            ada = (ada_target, hp.get("ada_interval", 4), hp.get("ada_kimg", 100.0))
            self.augment = DiscriminatorAugment(diffaugment, hp.get("gan_mode", "lsgan"), *ada)
        self.gen_ema = GeneratorEMA(self.generators, ema_decay) if ema_decay is not None else None
        self.lambda_r1 = float(lambda_r1)

    def judge(self, disc: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``disc(images)``, through DiffAugment when it is on: the only way a discriminator is called in training."""
        return disc(images if self.augment is None else self.augment(images))

    def regularise_discriminator(
        self, name: str, disc: nn.Module, real: torch.Tensor, pred_real: torch.Tensor, loss: torch.Tensor, losses: dict
    ) -> torch.Tensor:
        """In a discriminator's loss, after scoring ``real``: feed ADA's overfitting signal and add R1 (logged as
        ``r1_<name>``). Returns ``loss`` itself when neither is on."""
        if self.augment is not None:
            self.augment.observe(pred_real)
        if self.lambda_r1 > 0:
            judge: Callable = lambda x: self.judge(disc, x)  # noqa: E731  (R1 through the same augmentation)
            losses[f"r1_{name}"] = r1_penalty(judge, real)
            loss = loss + 0.5 * self.lambda_r1 * losses[f"r1_{name}"]
        return loss

    def after_optimizer_step(self, group: str, images: int) -> None:
        """After each optimizer step of a phase (``phases.py``): the generators' (``g``) updates their weight
        averages; the discriminators' (``d``) counts its ``images`` for ADA, which moves p every ``interval`` steps
        and logs train/ada/{p,rt}."""
        if group == "g" and self.gen_ema is not None:
            self.gen_ema.step(self.generators)
        if group != "d" or self.augment is None or not self.augment.adaptive:
            return
        trainer = getattr(self, "_trainer", None)
        reduce = None
        if trainer is not None and trainer.world_size > 1:
            reduce = lambda t: trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        update = self.augment.step(images, reduce)
        if update is not None and trainer is not None:
            self.log_dict({"train/ada/p": update["p"], "train/ada/rt": update["rt"]}, batch_size=images)

    def averaged_generator(self, direction: str) -> nn.Module | None:
        """The EMA generator of ``direction`` outside training (validation, sample grids), else None."""
        if self.gen_ema is None or getattr(self, "training", False):
            return None
        return self.gen_ema.generator(direction)
