"""PatchNCE as a training term (CUT; CycleGAN's optional ``lambda_nce``): the projection head for a generator's
encoder taps, and the loss between an image and its translation. The loss and the head themselves are
``losses.PatchNCELoss`` and ``networks.PatchSampleF``; this file joins them to a generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.models.losses import PatchNCELoss
from cyclegan_lightning.networks import PatchSampleF, ResnetGenerator


def build_projection_head(
    generator: nn.Module, layers: Sequence[int], num_patches: int, dim: int, init_type: str, init_gain: float
) -> PatchSampleF:
    """F for ``generator``'s taps at ``layers``, built from the known widths (no lazy first-batch creation), or a
    one-line ``ConfigError`` when the generator cannot be tapped or the layers are wrong."""
    if not isinstance(generator, ResnetGenerator):
        raise ConfigError(
            f"PatchNCE taps the encoder of a ResNet generator; model.generator is {type(generator).__name__}. "
            "Use model/generator=resnet_9blocks (or resnet_6blocks)."
        )
    try:
        channels = generator.feature_channels(layers)
    except ValueError as exc:
        raise ConfigError(f"model.nce_layers: {exc}") from None
    if num_patches < 1:
        raise ConfigError(f"model.num_patches must be >= 1, got {num_patches}")
    return PatchSampleF(channels, num_patches, dim, init_type=init_type, init_gain=init_gain)


def patchnce_between(
    encoder: ResnetGenerator,
    head: PatchSampleF,
    criterion: PatchNCELoss,
    src: torch.Tensor,
    tgt: torch.Tensor,
    layers: Sequence[int],
    rng: torch.Generator,
    weight: float = 1.0,
    flipped: bool = False,
) -> torch.Tensor:
    """The official ``calculate_NCE_loss``: mean over ``layers`` of ``weight * PatchNCE``. Keys are ``src``'s
    patches at fresh positions drawn from ``rng``, queries ``tgt``'s at the same positions; ``flipped``: ``tgt``
    was made from the width-flipped ``src``, so its features are flipped back first (flip equivariance)."""
    feat_q = encoder.encode(tgt, layers)
    if flipped:
        feat_q = [f.flip(3) for f in feat_q]
    feat_k = encoder.encode(src, layers)
    keys, ids = head(feat_k, generator=rng)
    queries, _ = head(feat_q, patch_ids=ids)
    return sum(criterion(q, k) * weight for q, k in zip(queries, keys)) / len(layers)


def seeded_generator() -> torch.Generator:
    """A CPU generator for patch positions, seeded from torch's global RNG (so ``seed_everything`` fixes it)."""
    return torch.Generator().manual_seed(int(torch.randint(2**62, ())))
