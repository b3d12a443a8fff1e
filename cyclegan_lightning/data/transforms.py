"""The reference implementation's preprocessing modes, built from torchvision ``transforms.v2`` on tensors.

Tensors (not PIL images) flow through, so 16-bit and float inputs keep their precision until the end.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
BICUBIC = InterpolationMode.BICUBIC
# aspect-preserving resizes refuse outputs larger than this: a 1 x 5000 strip scaled to width 286 would need
# 286 x 1,430,000 pixels (5 GB as float RGB); the dataset turns the refusal into an ImageLoadError naming the file
MAX_RESIZED_PIXELS = 4096 * 4096


class ResizeTooLargeError(ValueError):
    """An image's aspect ratio would make an aspect-preserving resize allocate more than ``MAX_RESIZED_PIXELS``."""


def _check_resize(h: int, w: int, new_h: int, new_w: int) -> None:
    if new_h * new_w > MAX_RESIZED_PIXELS:
        raise ResizeTooLargeError(
            f"a {w}x{h} image would be resized to {new_w}x{new_h}, too large "
            f"(MAX_RESIZED_PIXELS={MAX_RESIZED_PIXELS}); its aspect ratio is too extreme for this preprocess mode"
        )


class ScaleWidth(nn.Module):
    """Resize to ``width`` keeping the aspect ratio, with the height at least ``min_height`` (reference semantics)."""

    def __init__(self, width: int, min_height: int = 0):
        super().__init__()
        self.width, self.min_height = width, min_height

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        new_h = max(int(self.width * h / w), self.min_height)
        _check_resize(h, w, new_h, self.width)
        if (h, w) == (new_h, self.width):
            return img
        return TF.resize(img, [new_h, self.width], interpolation=BICUBIC, antialias=True)


class UpscaleToAtLeast(nn.Module):
    """Upscale (keeping the aspect ratio) so both sides are >= ``size``; larger images pass unchanged.

    Lets an image smaller than the crop be used instead of failing inside ``RandomCrop``.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if min(h, w) >= self.size:
            return img
        scale = self.size / min(h, w)
        new = [max(self.size, math.ceil(h * scale)), max(self.size, math.ceil(w * scale))]
        _check_resize(h, w, *new)
        return TF.resize(img, new, interpolation=BICUBIC, antialias=True)


class RoundToMultiple(nn.Module):
    """Resize so both sides are multiples of ``base`` (nearest, at least ``base``): the reference's ``none`` mode."""

    def __init__(self, base: int = 4):
        super().__init__()
        self.base = base

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        new = [max(self.base, round(h / self.base) * self.base), max(self.base, round(w / self.base) * self.base)]
        if new == [h, w]:
            return img
        return TF.resize(img, new, interpolation=BICUBIC, antialias=True)


class ClampUnit(nn.Module):
    """Clip to [0, 1]: bicubic resizing overshoots slightly at edges. A module, not a lambda, so it pickles."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.clamp(0.0, 1.0)


def build_transform(
    preprocess: str = "resize_and_crop",
    load_size: int = 286,
    crop_size: int = 256,
    flip: bool = True,
    channels: int = 3,
    train: bool = True,
) -> v2.Compose:
    """Float (C, H, W) in [0, 1] -> augmented tensor in [-1, 1].

    ``train=False`` gives the deterministic validation version: no random crop (a centre crop) and no flip.
    """
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}")
    if crop_size > load_size and preprocess in ("resize_and_crop", "scale_width_and_crop"):
        raise ValueError(f"crop_size ({crop_size}) must be <= load_size ({load_size}) for preprocess={preprocess}")
    crop = v2.RandomCrop(crop_size) if train else v2.CenterCrop(crop_size)
    steps: list[nn.Module] = []
    if preprocess == "resize_and_crop":
        steps += [v2.Resize([load_size, load_size], interpolation=BICUBIC, antialias=True), crop]
    elif preprocess == "crop":
        steps += [UpscaleToAtLeast(crop_size), crop]
    elif preprocess == "scale_width":
        steps += [ScaleWidth(load_size, min_height=crop_size)]
    elif preprocess == "scale_width_and_crop":
        steps += [ScaleWidth(load_size, min_height=crop_size), UpscaleToAtLeast(crop_size), crop]
    if preprocess in ("scale_width", "none"):
        steps.append(RoundToMultiple(4))
    if flip and train:
        steps.append(v2.RandomHorizontalFlip())
    steps += [ClampUnit(), v2.Normalize([0.5] * channels, [0.5] * channels)]
    return v2.Compose(steps)
