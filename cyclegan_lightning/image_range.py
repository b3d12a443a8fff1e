"""The one conversion between the networks' range [-1, 1] and the [0, 1] of image files, metrics and loggers."""

from __future__ import annotations

import torch


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float32 [0, 1], clamped (a generator's tanh output may overshoot after bf16 rounding)."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1)


def from_unit(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], what the networks take."""
    return images * 2 - 1
