"""Run a generator on an image of any size: pad bottom/right to its size multiple, run, crop back.

The one padding of training-time ``forward``, the Translator, tiling and exported graphs (ONNX, TorchScript).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def size_multiple(net: nn.Module) -> int:
    return int(getattr(net, "size_multiple", 4))


def min_side(net: nn.Module) -> int:
    """Smallest side the net runs on: a ResNet needs 2x2 at its bottleneck (instance norm of 1 pixel is undefined)."""
    m = size_multiple(net)
    return 2 * m if m <= 4 else m


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Pad bottom/right so both sides are multiples of ``multiple`` and at least ``minimum``: replicate up to
    ``minimum`` (an image too small to reflect), then reflect to the multiple.

    The one padding of the Translator, tiling and exported models: it runs eagerly, under ``torch.jit.script``, and
    under ONNX tracing, where the sides are tensors and the pads become graph ops (so no data-dependent branches).
    """
    h, w = x.shape[-2], x.shape[-1]
    tracing = torch.jit.is_tracing()
    grow_h, grow_w = minimum - h, minimum - w
    grow_h, grow_w = (grow_h + abs(grow_h)) // 2, (grow_w + abs(grow_w)) // 2  # max(., 0) for ints and traced sides
    if tracing or grow_h > 0 or grow_w > 0:
        x = F.pad(x, [0, grow_w, 0, grow_h], mode="replicate")
    pad_h, pad_w = (-(h + grow_h)) % multiple, (-(w + grow_w)) % multiple
    if tracing or pad_h > 0 or pad_w > 0:
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
    return x


def translate_padded(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> output of exactly (H, W): pad to the net's multiple, run, crop back."""
    h, w = x.shape[-2:]
    return net(pad_to_multiple(x, size_multiple(net), min_side(net)))[..., :h, :w]
