"""Full-reference image quality of a translation against its ground truth (the demo's truth folders, evaluate.py):
PSNR and SSIM of single images in [0, 1]. Weight-free, so training, validation and evaluation can all use them."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    return float(peak_signal_noise_ratio(pred[None].float(), target[None].float(), data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM (Gaussian 11x11 window; smaller for tiny images) of images in [0, 1]."""
    side = min(pred.shape[-2:])
    kernel = 11 if side >= 11 else max(3, side - (1 - side % 2))
    return float(
        structural_similarity_index_measure(
            pred[None].float(), target[None].float(), data_range=1.0, kernel_size=kernel
        )
    )
