"""Normalisation choice and weight initialisation shared by the generators and discriminators.

Both follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, ``networks.py``) so that
checkpoints trained there load here and training starts from the same distribution.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
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
