"""Speed levers: switches that change how the networks run, not what they compute (docs/performance.md)."""

from __future__ import annotations

import torch
from lightning import LightningModule


def apply_speed_levers(model: LightningModule, channels_last: bool, compile_generators: bool) -> None:
    """``channels_last``: NHWC weights and activations (pays on tensor-core GPUs, slower on CPUs); the later
    ``.to(device)`` keeps the format. ``compile_generators``: ``torch.compile`` each generator in place, so the
    state-dict keys stay ``gen_a2b.model.*`` (not ``_orig_mod.*``) and checkpoints load either way."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile_generators:
        for gen in model.generators.values():
            gen.compile()
