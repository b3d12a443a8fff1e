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


class PatchNCELoss(nn.Module):
    """PatchNCE of CUT (Park et al., ECCV 2020): each query patch must pick its own key patch among the others.

    Same semantics as the official ``models/patchnce.py``, for one encoder layer. Inputs are L2-normalised projections
    grouped per image, ``(B, P, C)``, with query patch ``i`` taken at the same position as key patch ``i``. The
    logits of
    query ``i`` are ``[q_i.k_i, q_i.k_1, ..., q_i.k_P]`` over the temperature. The diagonal (``q_i.k_i`` again) is
    filled
    with -10 rather than removed, as the official code does. The loss is cross-entropy towards class 0, the positive. So
    the negatives come from the same image (255 of them for P=256), or from the whole minibatch with
    ``negatives_from_minibatch`` (the official ``nce_includes_all_negatives_from_minibatch``, which SinCUT uses).
    Keys are detached: NCE gradients reach G and F only through the query. Computed in fp32 even under autocast,
    since bf16 logits divided by 0.07 lose the small differences the loss is made of.
    """

    def __init__(
        self,
        temperature: float = 0.07,  # the official nce_T
        negatives_from_minibatch: bool = False,  # False: negatives from the same image only (CUT, FastCUT)
        reduction: str = "mean",  # mean over all B*P patches (as cut_model.py), or "none" for the (B, P) losses
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.temperature, self.negatives_from_minibatch, self.reduction = (
            temperature,
            negatives_from_minibatch,
            reduction,
        )

    def forward(self, feat_q: torch.Tensor, feat_k: torch.Tensor) -> torch.Tensor:
        if feat_q.dim() != 3 or feat_q.shape != feat_k.shape:
            raise ValueError(
                f"PatchNCELoss wants query and key of one shape (B, P, C), got {tuple(feat_q.shape)} "
                f"and {tuple(feat_k.shape)}"
            )
        batch, patches, dim = feat_q.shape
        with torch.autocast(feat_q.device.type, enabled=False):
            q, k = feat_q.float(), feat_k.detach().float()
            n = batch * patches
            l_pos = torch.bmm(q.reshape(n, 1, dim), k.reshape(n, dim, 1)).view(n, 1)
            groups = 1 if self.negatives_from_minibatch else batch
            q, k = q.reshape(groups, -1, dim), k.reshape(groups, -1, dim)
            l_neg = torch.bmm(q, k.transpose(2, 1))
            diagonal = torch.eye(q.shape[1], device=q.device, dtype=torch.bool)[None]
            l_neg = l_neg.masked_fill(diagonal, -10.0).view(n, -1)
            logits = torch.cat((l_pos, l_neg), dim=1) / self.temperature
            loss = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=q.device), reduction="none")
        return loss.mean() if self.reduction == "mean" else loss.view(batch, patches)
