"""Faster CPU convolutions for inference (the ``fastconv`` backend): same results up to fp32 rounding, fewer
multiplications or better-shaped matrix products than the convolutions oneDNN runs for these layers.

- ``WinogradConv3x3``: a 3x3, stride-1, unpadded convolution (the ResNet blocks' convolutions, which follow an
  explicit padding layer) by Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, CVPR 2016): each 4x4 output
  tile takes 36 multiplications per input/output channel pair instead of 144. Input tiles are transformed by one
  small matrix product, multiplied with the pre-transformed weights in 36 batched matrix products, and transformed
  back. Rounding differences are ~1e-5 relative (tested against the convolution).
- ``ShiftAddConv``: a convolution with few output channels (the last 7x7 layer, 64 -> 3): one matrix product of all
  kernel taps with the input, then the shifted tap planes summed, band of rows by band. oneDNN is slow on 3 output
  channels.

``accelerate(generator)`` returns a copy with these layers swapped in; the original module is left untouched.
Inference only: no gradients flow to the original weights. Batches are no faster per image than single images here
(the Winograd tiles of several images fall out of cache: 41 against 26 ms per image and layer, 1 thread).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# F(4x4, 3x3) transforms (Lavin and Gray 2016, interpolation points 0, +-1, +-2, infinity)
_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
TILE, SPAN = 4, 6  # output tile side, input tile side (TILE + 3 - 1)


class WinogradConv3x3(nn.Module):
    """``conv`` (3x3, stride 1, no padding, no dilation, one group) by F(4x4, 3x3); any input size of at least 3x3."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
        w = conv.weight.detach().double()  # (out, in, 3, 3)
        u = (g @ w @ g.T).permute(2, 3, 1, 0)  # transformed weights G w G^T, (6, 6, in, out)
        self.register_buffer("u", u.reshape(SPAN * SPAN, w.shape[1], w.shape[0]).float().contiguous())
        self.register_buffer("bt", bt.float())  # applied to tile rows, then columns (separable: 2 x 6 x 6 per tile)
        self.register_buffer("at", at.float())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, hp, wp = x.shape
        h, w = hp - 2, wp - 2
        th, tw = -(-h // TILE), -(-w // TILE)
        if th * TILE != h or tw * TILE != w:  # zeros beyond the edge only feed outputs that are cropped off
            x = F.pad(x, (0, tw * TILE - w, 0, th * TILE - h))
        tiles = x.unfold(2, SPAN, TILE).unfold(3, SPAN, TILE)  # (n, c, th, tw, 6, 6), overlapping views
        tiles = tiles.permute(4, 5, 0, 2, 3, 1).reshape(SPAN, SPAN * n * th * tw * c)  # (6, 6 x n*th*tw*c)
        v = (self.bt @ tiles).view(SPAN, SPAN, -1)  # B^T d ...
        v = torch.matmul(self.bt, v).view(SPAN * SPAN, n * th * tw, c)  # ... B: (36, tiles, in)
        m = torch.bmm(v, self.u)  # (36, tiles, out): the 36 independent channel products
        co = m.shape[-1]
        y = (self.at @ m.view(SPAN, -1)).view(TILE, SPAN, -1)  # A^T m ...
        y = torch.matmul(self.at, y).view(TILE, TILE, n, th, tw, co)  # ... A
        y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, co, th * TILE, tw * TILE)
        if th * TILE != h or tw * TILE != w:
            y = y[:, :, :h, :w]
        return y if self.bias is None else y + self.bias


class ShiftAddConv(nn.Module):
    """``conv`` (stride 1, no padding, one group) as one matrix product of every tap with the input, then the
    shifted tap planes summed: efficient when the output has few channels."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        w = conv.weight.detach()
        self.out_channels, _, self.kh, self.kw = w.shape
        self.register_buffer("w", w.permute(2, 3, 0, 1).reshape(-1, w.shape[1]).contiguous())  # (kh*kw*out, in)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().view(1, -1, 1, 1).clone())

    rows = 32  # output rows per band: a band's tap planes (kh * kw * out x (rows + kh - 1) x width) stay in cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, hp, wp = x.shape
        h, w = hp - self.kh + 1, wp - self.kw + 1
        y = x.new_empty(n, self.out_channels, h, w)
        for r0 in range(0, h, self.rows):
            r1 = min(h, r0 + self.rows)
            band = x[:, :, r0 : r1 + self.kh - 1]
            z = (self.w @ band.reshape(n, c, -1)).view(n, self.kh, self.kw, self.out_channels, band.shape[2], wp)
            out = y[:, :, r0:r1]
            out.copy_(z[:, 0, 0, :, : r1 - r0, :w])
            for i in range(self.kh):
                for j in range(self.kw):
                    if i or j:
                        out += z[:, i, j, :, i : i + r1 - r0, j : j + w]
        return y if self.bias is None else y + self.bias


def _plain(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def fast_version(conv: nn.Module) -> nn.Module | None:
    """The faster equivalent of ``conv``, or None where this module has none (measured: docs/performance.md)."""
    if not _plain(conv):
        return None
    if conv.kernel_size == (3, 3) and conv.in_channels >= 32 and conv.out_channels >= 32:
        return WinogradConv3x3(conv)
    if conv.out_channels <= 4 and conv.in_channels >= 16 and conv.kernel_size[0] * conv.kernel_size[1] > 1:
        return ShiftAddConv(conv)
    return None


@torch.no_grad()
def accelerate(generator: nn.Module) -> nn.Module:
    """A copy of ``generator`` (eval mode) with every convolution that has a faster CPU form replaced by it."""
    fast = copy.deepcopy(generator).eval()
    for parent in list(fast.modules()):
        for name, child in parent.named_children():
            replacement = fast_version(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    return fast
