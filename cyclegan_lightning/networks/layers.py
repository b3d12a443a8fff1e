"""Normalisation choice, weight initialisation and blur (anti-aliased) resampling shared by the networks.

Norms and init follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, ``networks.py``), the
blur layers the official CUT code (taesungp/contrastive-unpaired-translation, ``networks.py``), so that checkpoints
trained there load here and training starts from the same distribution.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.checkpoint import checkpoint, noop_context_fn

NORMS = ("instance", "batch", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """Return a factory ``channels -> nn.Module`` for the named normalisation.

    Instance norm has no affine parameters and no running statistics (as in the reference), batch norm has both.
    """
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def conv_bias(norm: str) -> bool:
    """The reference gives the convolutions before a norm a bias only under instance norm (``use_bias =
    norm_layer == InstanceNorm2d``): batch norm's shift replaces it, and with ``norm=none`` it has none either."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm == "instance"


@torch.no_grad()
def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights (biases to 0) and batch-norm scales ~ N(1, gain), in place."""
    if init_type not in INIT_TYPES:
        raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")

    def init_module(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            # a spectral-normalised conv computes ``weight`` from ``original``: initialise that one
            weight = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, init_gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=init_gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(weight, gain=init_gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, init_gain)
            nn.init.zeros_(m.bias)

    net.apply(init_module)
    return net


def checkpointed(
    fn: Callable[..., torch.Tensor], *args: torch.Tensor, modules: nn.Module | None = None
) -> torch.Tensor:
    """``fn(*args)``, keeping only ``args`` for the backward pass and recomputing the rest there (activation
    checkpointing). Non-reentrant ``torch.utils.checkpoint``: the recomputation replays the saved RNG state, so
    dropout draws the same masks, and the gradients are bitwise those of a plain call. Batch-norm running statistics
    in ``modules`` (default: ``fn`` itself) are put back after the recomputation, so they are updated once."""
    if not torch.is_grad_enabled():
        return fn(*args)
    owner = modules if modules is not None else fn
    norms = [m for m in owner.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    context_fn = (lambda: (contextlib.nullcontext(), _buffers_kept(norms))) if norms else noop_context_fn
    return checkpoint(fn, *args, use_reentrant=False, context_fn=context_fn)


@contextlib.contextmanager
def _buffers_kept(modules: list[nn.Module]) -> Iterator[None]:
    saved = [(b, b.clone()) for m in modules for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def binomial_filter(size: int) -> torch.Tensor:
    """The 2-D binomial blur of side ``size`` (3: [1, 2, 1], 4: [1, 3, 3, 1], outer product), summing to 1: the
    official CUT code's ``get_filter``, computed the same way (float64 rows, float32 product and sum)."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    filt = (row[:, None] * row[None, :]).float()
    return filt / filt.sum()


class BlurDownsample(nn.Module):
    """Anti-aliased 2x downsampling (Zhang, ICML 2019, "Making Convolutional Networks Shift-Invariant Again"): a
    fixed 3x3 binomial blur of each channel, reflect-padded, at stride 2; output side ``ceil(side / 2)``.

    The official CUT code's ``Downsample`` (filt_size 3, the default): the same buffer ``filt`` (C, 1, 3, 3), kept in
    the state dict as there, so its checkpoints load with ``strict=True``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.register_buffer("filt", binomial_filter(3)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Anti-aliased 2x upsampling: each channel replicate-padded by 1, spread by a fixed 4x4 binomial kernel (times
    4, the stride squared) at stride 2, and cropped to exactly twice the input side.

    The official CUT code's ``Upsample`` (filt_size 4, the default), with its buffer ``filt`` (C, 1, 4, 4).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.pad = nn.ReplicationPad2d(1)
        self.register_buffer("filt", (binomial_filter(4) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2, groups=x.shape[1])
        return out[:, :, 1:-1, 1:-1]
