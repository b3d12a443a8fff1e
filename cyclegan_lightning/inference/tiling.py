"""Run a generator on an image of any size: pad to its size multiple and crop back, or tile a large image.

Tiling with instance norm is the hard part: each tile would normalise with its own statistics and tiles would
differ in tone, leaving visible seams. So the statistics of every ``InstanceNorm2d`` are first measured once for
the whole image (exactly up to ``stats_size``, from its central crop beyond it), then every tile is normalised
with those same statistics.
Overlapping tiles are blended with linear ramps, which also hides the few pixels at each tile edge whose
receptive field was cut. Batch norm (running statistics) and no norm are tile-independent already.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from cyclegan_lightning.networks.padding import min_side, pad_to_multiple, size_multiple


# ---- instance-norm statistics shared by all tiles -------------------------------------------------------------
def _instance_norms(net: nn.Module) -> list[nn.InstanceNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats]


@torch.no_grad()
def measure_norm_stats(
    net: nn.Module, xp: torch.Tensor, tile: int, stats_size: int = 1024, iterations: int = 1, mode: str = "crop"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and variance at each instance norm as if the padded image ``xp`` (1, C, H, W) were seen
    whole; for several images (N, C, H, W), pooled over all of them (one set for every frame of a video).

    If its longer side is at most ``stats_size`` it is run whole: exact, and then tiled output matches untiled up
    to the blended tile borders (ResNet-9, 512x512 photo, 256 tiles: max |diff| 0.006 in [-1, 1]). Beyond it,
    ``mode="crop"`` (default) measures on the central ``stats_size`` crop at full resolution, ``"pooled"`` pools
    over non-overlapping tiles each normalised by itself (an extra pass over the whole image; ``iterations`` > 1
    re-measures with the pooled statistics, exact only after as many passes as there are norms). Either way all
    tiles share one set of statistics, so they agree with each other (no tone jumps at seams), but the result is
    not identical to whole-image inference: with random weights, mean |diff| 0.13 (crop) and 0.14 (pooled) when
    the statistics see a quarter of the image. Measuring on a downscaled copy was worse still: convolutions respond
    differently at another scale. Raise ``stats_size`` as far as memory allows.
    """
    norms = _instance_norms(net)
    whole = max(xp.shape[-2:]) <= stats_size
    if not whole and mode == "crop":  # one consistent pass over the central stats_size crop, at full resolution
        m = size_multiple(net)
        ch, cw = (min(xp.shape[-2], stats_size) // m * m, min(xp.shape[-1], stats_size) // m * m)
        y0, x0 = (xp.shape[-2] - ch) // 2 // m * m, (xp.shape[-1] - cw) // 2 // m * m
        xp, whole = xp[..., y0 : y0 + ch, x0 : x0 + cw], True
    boxes = (
        [(0, 0, *xp.shape[-2:])]
        if whole
        else [
            (y, x0, min(tile, xp.shape[-2]), min(tile, xp.shape[-1]))
            for y in tile_starts(xp.shape[-2], min(tile, xp.shape[-2]), 0)
            for x0 in tile_starts(xp.shape[-1], min(tile, xp.shape[-1]), 0)
        ]
    )
    stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    for _ in range(1 if whole else iterations):
        sums = [[0, 0.0, 0.0] for _ in norms]  # pixels, sum, sum of squares per channel (float64)

        def record(module, inputs, acc):  # Welford per channel: no full-size temporaries (a 1024^2 map is 256 MiB)
            var, mean = torch.var_mean(inputs[0].float(), dim=(2, 3), correction=0, keepdim=True)
            n = inputs[0].shape[-2] * inputs[0].shape[-1]
            mean, var = mean.double(), var.double()
            acc[0] += n
            acc[1] = acc[1] + mean * n
            acc[2] = acc[2] + (var + mean * mean) * n

        handles = [
            m.register_forward_pre_hook(lambda mod, inp, acc=acc: record(mod, inp, acc)) for m, acc in zip(norms, sums)
        ]
        try:
            with fixed_norm_stats(net, stats) if stats else contextlib.nullcontext():
                for image in xp.split(1):  # one image at a time: memory as for one
                    for y, x0, th, tw in boxes:
                        net(image[..., y : y + th, x0 : x0 + tw])
        finally:
            for handle in handles:
                handle.remove()
        stats = []
        for n, s1, s2 in sums:
            mean = s1 / n
            stats.append((mean.float(), (s2 / n - mean * mean).clamp_min(0).float()))
    return stats


class _FixedStatsNorm(nn.Module):
    """Stands in for one InstanceNorm2d: normalises with given statistics instead of the input's own."""

    def __init__(self, norm: nn.InstanceNorm2d, mean: torch.Tensor, var: torch.Tensor):
        super().__init__()
        self.eps, self.mean, self.var = norm.eps, mean, var
        self.weight, self.bias = (norm.weight, norm.bias) if norm.affine else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.var + self.eps)  # per channel, so one full-size allocation below
        shift = -self.mean * scale
        if self.weight is not None:
            w, b = self.weight.view(1, -1, 1, 1), self.bias.view(1, -1, 1, 1)
            scale, shift = scale * w, shift * w + b
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


@contextlib.contextmanager
def fixed_norm_stats(net: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Temporarily swap every instance norm of ``net`` for one with the given statistics (in module order)."""
    norms = _instance_norms(net)
    if len(norms) != len(stats):
        raise RuntimeError(f"{len(norms)} instance norms but {len(stats)} measured statistics")
    originals = []
    for norm, (mean, var) in zip(norms, stats):
        fixed = _FixedStatsNorm(norm, mean, var)
        originals.append((norm, norm.forward))
        norm.forward = fixed.forward  # instance attribute shadows the class method; undone below
    try:
        yield
    finally:
        for norm, _ in originals:
            del norm.forward


# ---- tiles ---------------------------------------------------------------------------------------------------
def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    starts = [min(i * stride, size - tile) for i in range(n)]
    return sorted(set(starts))


def _ramp(length: int, start: int, size: int, overlap: int, device) -> torch.Tensor:
    """1-D blend weights of a tile. On each side with a neighbour, over the ``overlap`` band: 0 for the outer
    quarter (pixels whose receptive field the tile cut), a linear ramp over the middle half, then 1. The
    neighbour's weights mirror these, so in an overlap of exactly ``overlap`` they sum to 1."""
    w = torch.ones(length, device=device)
    cut, ramp = overlap // 4, overlap - 2 * (overlap // 4)
    if overlap <= 0:
        return w
    r = torch.cat([torch.zeros(cut, device=device), (torch.arange(ramp, device=device) + 0.5) / ramp])
    if start > 0:
        w[: len(r)] = r
    if start + length < size:
        w[-len(r) :] = torch.minimum(w[-len(r) :], r.flip(0))
    return w


@torch.no_grad()
def translate_tiled(
    net: nn.Module,
    x: torch.Tensor,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 1,
    stats_size: int = 1024,
    stats_passes: int = 1,
    stats_mode: str = "crop",
    out_channels: int | None = None,
    stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None,  # given instance-norm statistics: not measured
) -> torch.Tensor:
    """Translate one image (1, C, H, W) in [-1, 1] tile by tile; memory is bounded by ``tile_size``.

    The output (1, C_out, H, W) is accumulated on the input's device in float32.
    """
    if x.shape[0] != 1:
        raise ValueError("translate_tiled takes one image at a time")
    m = size_multiple(net)
    h, w = x.shape[-2:]
    tile = max(m, m * math.ceil(tile_size / m))
    overlap = min(overlap, tile // 2)
    xp = pad_to_multiple(x, m, min_side(net))
    hp, wp = xp.shape[-2:]
    th, tw = min(tile, hp), min(tile, wp)
    if stats is None:
        stats = measure_norm_stats(net, xp, tile, stats_size, stats_passes, stats_mode) if _instance_norms(net) else []
    out_channels = out_channels or _out_channels(net, x)
    out = torch.zeros(1, out_channels, hp, wp, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, hp, wp, dtype=torch.float32, device=x.device)
    boxes = [(y, x0) for y in tile_starts(hp, th, overlap) for x0 in tile_starts(wp, tw, overlap)]
    ctx = fixed_norm_stats(net, stats) if stats else contextlib.nullcontext()
    with ctx:
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            tiles = torch.cat([xp[..., y : y + th, x0 : x0 + tw] for y, x0 in chunk])
            result = net(tiles).float()
            for (y, x0), res in zip(chunk, result):
                wy = _ramp(th, y, hp, overlap, x.device)
                wx = _ramp(tw, x0, wp, overlap, x.device)
                wt = wy[:, None] * wx[None, :]
                out[0, :, y : y + th, x0 : x0 + tw] += res * wt
                weight[0, :, y : y + th, x0 : x0 + tw] += wt
    return (out / weight)[..., :h, :w]


def _out_channels(net: nn.Module, x: torch.Tensor) -> int:
    convs = [mod for mod in net.modules() if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d))]
    last = convs[-1]
    return last.weight.shape[1] if isinstance(last, nn.ConvTranspose2d) else last.weight.shape[0]
