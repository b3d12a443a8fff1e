"""Learning-rate policies, stepped once per epoch by the module (Lightning never steps them in manual mode)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, StepLR

LR_POLICIES = ("linear", "step", "cosine", "cosine_full")


class LinearDecay:
    """Reference rule: constant for ``n_epochs``, then linear decay over ``n_epochs_decay``.

    Called with the 0-based epoch index ``e``; the LR used in epoch ``E = e + 1`` is
    ``lr0 * (1 - max(0, E - n_epochs) / (n_epochs_decay + 1))``. A class, not a lambda, so it pickles and
    ``LambdaLR`` saves its attributes in checkpoints.
    """

    def __init__(self, n_epochs: int, n_epochs_decay: int):
        self.n_epochs, self.n_epochs_decay = n_epochs, n_epochs_decay

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.n_epochs) / float(self.n_epochs_decay + 1)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    policy: str,
    n_epochs: int,
    n_epochs_decay: int,
    step_epochs: int = 50,
    gamma: float = 0.1,
) -> LRScheduler:
    """``linear`` (the reference default), ``step`` (x ``gamma`` every ``step_epochs``), ``cosine`` (the reference's:
    ``T_max = n_epochs``, so it reaches zero after ``n_epochs`` and rises again during the decay epochs) or
    ``cosine_full`` (one half-cosine over the whole run, ``n_epochs + n_epochs_decay``, ending at zero)."""
    if policy == "linear":
        return LambdaLR(optimizer, LinearDecay(n_epochs, n_epochs_decay))
    if policy == "step":
        return StepLR(optimizer, step_size=step_epochs, gamma=gamma)
    if policy == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(1, n_epochs), eta_min=0.0)
    if policy == "cosine_full":
        return CosineAnnealingLR(optimizer, T_max=max(1, n_epochs + n_epochs_decay), eta_min=0.0)
    raise ValueError(f"lr_policy must be one of {LR_POLICIES}, got {policy!r}")
