"""An exponential moving average (EMA) of each generator's weights, for evaluation.

GAN generators oscillate from step to step; an average of their recent weights gives steadier, usually better
translations (Yazici et al., ICLR 2019, "The Unusual Effectiveness of Averaging in GAN Training"; used by
StyleGAN, UVCGAN2, joliGEN). Built on ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``:
``ema = decay * ema + (1 - decay) * weights`` after every generator step, buffers (batch-norm statistics)
included. The first update copies the weights, so the average starts from the trained (or identity-initialised)
generator, not from the random init.

The averages live in the state dict under ``gen_ema.<direction>.module.*`` (``checkpoints/format.py``,
``ema_state_prefix``): saved in every checkpoint, restored on resume, and picked by ``load_generators`` (prediction,
evaluation, export) when present. The attribute name ``gen_ema`` in the models must match ``EMA_PREFIX``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cyclegan_lightning.errors import ConfigError


class GeneratorEMA(nn.ModuleDict):
    """One ``AveragedModel`` per generator, keyed by direction; never trained (no gradients, no optimizer)."""

    def __init__(self, generators: dict[str, nn.Module], decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in (0, 1) (e.g. 0.999) or null, got {decay}")
        super().__init__(
            {
                d: AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
                for d, g in generators.items()
            }
        )
        self.requires_grad_(False)
        # (train/eval mode follows the model: the averages only run when it is in eval mode, see averaged_generator)

    @torch.no_grad()
    def step(self, generators: dict[str, nn.Module]) -> None:  # (not "update": ModuleDict has one)
        for direction, averaged in self.items():
            averaged.update_parameters(generators[direction])

    def generator(self, direction: str) -> nn.Module | None:
        """The averaged generator, or None before its first update (then the live one is the better guess)."""
        averaged = self[direction]
        return averaged.module if int(averaged.n_averaged) > 0 else None
