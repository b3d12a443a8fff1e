"""GAN objectives: least squares (LSGAN, the CycleGAN default), vanilla (BCE on logits) and WGAN-GP.

The reference implementation declares ``wgangp`` but never applies a gradient penalty for CycleGAN; here
``gradient_penalty`` is real and the module adds it to the discriminator loss when ``gan_mode="wgangp"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("lsgan", "vanilla", "wgangp")


class GANLoss(nn.Module):
    """``loss(prediction, target_is_real)`` over a discriminator's patch map, with labels 1.0 (real) / 0.0 (fake)."""

    def __init__(self, gan_mode: str = "lsgan"):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {gan_mode!r}")
        self.gan_mode = gan_mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        prediction = prediction.float()  # losses in fp32 under autocast
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.gan_mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def gradient_penalty(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, target_norm: float = 1.0
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - target_norm)^2] on random interpolates.

    Computed with ``create_graph=True`` so its gradient reaches the discriminator's parameters.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    interpolates = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = discriminator(interpolates)
    (grads,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    norms = grads.float().flatten(1).norm(2, dim=1)
    return ((norms - target_norm) ** 2).mean()
