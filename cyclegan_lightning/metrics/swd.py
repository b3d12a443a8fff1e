"""Multi-scale sliced Wasserstein distance (SWD) between two sets of images: a translation-quality metric that
needs no downloaded weights (Karras et al., "Progressive Growing of GANs", ICLR 2018, section 5 and their
``metrics/sliced_wasserstein.py``).

Each image is split into a Laplacian pyramid (finest detail first, the blurred residual last). From every level,
7x7 neighbourhoods are cut on a fixed grid; each is one descriptor. Per level, the two sets of descriptors are
compared by the sliced Wasserstein distance: both are projected on the same random unit directions, and the sorted
projections (the 1-D quantile functions) are compared point by point. The levels are averaged. Lower is better.

Two departures from the original, both for a translation metric during training:

- Descriptors of *both* sets are normalised with the per-channel mean and std of the **real** set. The original
  normalises each set by its own statistics, which makes a global colour or contrast change invisible: an
  identity mapping would score almost as well as a perfect colour grade, the most common translation there is.
  Here the result is in units of the real patches' standard deviation.
- Neighbourhoods lie on a fixed grid (not at random places) and the projection directions come from a fixed seed,
  so the value depends only on the two sets of images: reruns, validation order and DDP sharding give the same
  number, and values are comparable across epochs and runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

PATCH = 7  # neighbourhood side (PGGAN)
MIN_SIZE = 16  # the coarsest pyramid level is at least this many pixels on its short side (PGGAN)
PATCHES_PER_IMAGE = 128  # at most this many neighbourhoods per image and level (PGGAN: 128 random ones)
N_DIRECTIONS = 512  # projection directions per level (PGGAN: 4 repeats x 128)
SEED = 0  # seed of the projection directions: fixed, so values are comparable across runs
_KERNEL_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16  # binomial 5-tap filter of cv2.pyrDown / pyrUp


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5x5 binomial blur per channel with mirrored borders."""
    c = x.shape[1]
    k = (_KERNEL_1D * gain**0.5).to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect" if min(x.shape[-2:]) > 2 else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = x.new_zeros(*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3])
    up[..., ::2, ::2] = x
    return _blur(up, gain=4.0)[..., : size[0], : size[1]]


def laplacian_pyramid(images: torch.Tensor, min_size: int = MIN_SIZE) -> list[torch.Tensor]:
    """Levels of a (N, C, H, W) batch, finest first: band-pass details, then the low-pass residual, whose short
    side is the first one below ``2 * min_size`` (64x64 images: 64, 32, 16)."""
    levels, x = [], images.float()
    while min(x.shape[-2:]) >= 2 * min_size:
        down = _pyr_down(x)
        levels.append(x - _pyr_up(down, x.shape[-2:]))
        x = down
    return levels + [x]


def patch_descriptors(level: torch.Tensor, patch: int = PATCH, per_image: int = PATCHES_PER_IMAGE) -> torch.Tensor:
    """(N, C, H, W) -> (M, C * patch * patch): at most ``per_image`` neighbourhoods per image on an even grid."""
    h, w = level.shape[-2:]
    if min(h, w) < patch:
        raise ValueError(f"SWD needs images of at least {patch}x{patch} pixels per pyramid level, got {h}x{w}")
    stride = 1
    while ((h - patch) // stride + 1) * ((w - patch) // stride + 1) > per_image:
        stride += 1
    cols = F.unfold(level, patch, stride=stride)  # (N, C * patch * patch, positions)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def pyramid_descriptors(images: torch.Tensor, min_size: int = MIN_SIZE) -> list[torch.Tensor]:
    """Descriptors of every pyramid level of a batch, finest first."""
    return [patch_descriptors(level) for level in laplacian_pyramid(images, min_size)]


def projection_directions(dim: int, n: int = N_DIRECTIONS, seed: int = SEED) -> torch.Tensor:
    """(dim, n) random unit vectors, the same for a given (dim, n, seed) on every machine."""
    dirs = torch.randn(dim, n, generator=torch.Generator().manual_seed(seed))
    return dirs / dirs.norm(dim=0, keepdim=True)


def _quantiles(sorted_x: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of an ascending (m, k) tensor resampled to n rows at quantiles (i + 0.5) / n (linear interpolation)."""
    m = sorted_x.shape[0]
    if m == n:
        return sorted_x
    pos = ((torch.arange(n, device=sorted_x.device, dtype=torch.float64) + 0.5) * m / n - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    t = (pos - lo).to(sorted_x.dtype)[:, None]
    return sorted_x[lo] * (1 - t) + sorted_x[hi] * t


def sliced_wasserstein(
    real: torch.Tensor, fake: torch.Tensor, n_directions: int = N_DIRECTIONS, seed: int = SEED, channels: int = 3
) -> torch.Tensor:
    """Sliced Wasserstein-1 distance between two (M, C * k * k) descriptor sets (M may differ), both normalised
    with the real set's per-channel mean and std."""
    real, fake = real.double(), fake.double()
    by_channel = real.view(real.shape[0], channels, -1)
    mean = by_channel.mean(dim=(0, 2)).repeat_interleave(by_channel.shape[2])
    std = by_channel.std(dim=(0, 2)).clamp_min(1e-3).repeat_interleave(by_channel.shape[2])
    real, fake = (real - mean) / std, (fake - mean) / std
    dirs = projection_directions(real.shape[1], n_directions, seed).to(real)
    n = max(real.shape[0], fake.shape[0])
    total = real.new_zeros(())
    for chunk in dirs.split(128, dim=1):  # bounded memory: 128 directions at a time
        proj_real = _quantiles((real @ chunk).sort(dim=0).values, n)
        proj_fake = _quantiles((fake @ chunk).sort(dim=0).values, n)
        total += (proj_real - proj_fake).abs().mean(dim=0).sum()
    return (total / dirs.shape[1]).float()


def swd(real_images: torch.Tensor, fake_images: torch.Tensor, min_size: int = MIN_SIZE) -> torch.Tensor:
    """Multi-scale SWD between two batches of images (same channels; sizes may differ), averaged over levels."""
    metric = SlicedWassersteinDistance(min_size=min_size).to(real_images.device)
    metric.update(real_images, real=True)
    metric.update(fake_images, real=False)
    return metric.compute()


class SlicedWassersteinDistance(Metric):
    """Accumulates pyramid descriptors of real (target-domain) images and of translations; ``compute`` gives the
    multi-scale SWD (mean over levels). States are concatenated across DDP ranks; the value does not depend on
    the order or sharding of the images. NaN until both sets have images."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, min_size: int = MIN_SIZE, n_directions: int = N_DIRECTIONS, seed: int = SEED, **kwargs):
        super().__init__(**kwargs)
        self.min_size, self.n_directions, self.seed = min_size, n_directions, seed
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_desc", default=[], dist_reduce_fx="cat")
            self.add_state(f"{kind}_level", default=[], dist_reduce_fx="cat")  # pyramid level of each descriptor

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a (N, C, H, W) batch in any fixed range (the project's [-1, 1]) as real or translated images."""
        kind = "real" if real else "fake"
        with torch.no_grad():
            for i, desc in enumerate(pyramid_descriptors(images.detach(), self.min_size)):
                getattr(self, f"{kind}_desc").append(desc)
                getattr(self, f"{kind}_level").append(torch.full((desc.shape[0],), i, device=desc.device))

    def compute(self) -> torch.Tensor:
        # list states until DDP sync, which concatenates each into one tensor
        if any(len(state) == 0 for state in (self.real_desc, self.fake_desc)):
            return torch.tensor(math.nan, device=self.device)
        real, fake = dim_zero_cat(self.real_desc), dim_zero_cat(self.fake_desc)
        real_level, fake_level = dim_zero_cat(self.real_level), dim_zero_cat(self.fake_level)
        channels = real.shape[1] // PATCH**2
        dists = [
            sliced_wasserstein(real[real_level == lvl], fake[fake_level == lvl], self.n_directions, self.seed, channels)
            for lvl in torch.unique(real_level).tolist()
            if bool((fake_level == lvl).any())
        ]
        return torch.stack(dists).mean() if dists else torch.tensor(math.nan, device=self.device)
