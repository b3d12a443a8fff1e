"""Image-quality metrics: FID/KID (torchmetrics) with a local Inception file, PSNR and SSIM.

Inception weights are never downloaded: torchmetrics would fetch them when the metric is constructed, which fails
offline and can hang behind a silent firewall. So the file is looked for first and, when absent, the error says
which file to put where.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from cyclegan_lightning.errors import CheckpointError, ConfigError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
FEATURES = ("inception", "random")


class MissingWeightsError(CheckpointError):
    """The Inception weights FID/KID need are not on this machine."""


def default_inception_path() -> Path:
    """Where torch's hub cache keeps the file: ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file to use, checked to exist and to hold only tensors; raises with the fix if not."""
    target = Path(path).expanduser() if path else default_inception_path()
    fix = (
        f"FID/KID need the Inception-v3 weights {INCEPTION_FILE} (95 MB), which are not downloaded at run time. "
        f"On a machine with internet, download {INCEPTION_URL} and copy it to {target}"
        + ("" if path else " (or anywhere, and pass fid.inception_weights=/path/to/that/file)")
        + ". To skip FID/KID instead, set fid.enabled=false."
    )
    if not target.is_file():
        raise MissingWeightsError(f"no file {target}. {fix}")
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- truncated download, HTML error page, ...
        raise MissingWeightsError(f"{target} cannot be read as a weights file ({type(exc).__name__}). {fix}") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise MissingWeightsError(f"{target} is not the torch-fidelity Inception state_dict. {fix}")
    return target


class InceptionFeatures(nn.Module):
    """2048-d pool features of torch-fidelity's Inception-v3 (the FID standard) for float images in [0, 1]."""

    num_features = 2048

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        path = resolve_inception_weights(weights_path)  # before anything could try a download
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            import torch_fidelity  # noqa: F401
        except ImportError:
            raise ConfigError("FID/KID need torch-fidelity: pip install 'cyclegan-lightning[fid]'") from None
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.net((x.clamp(0, 1) * 255).round().to(torch.uint8))


class RandomConvFeatures(nn.Module):
    """A fixed, seeded random conv net: tests the FID/KID plumbing without Inception.

    Its FIDs are not comparable with published numbers or across ``num_features``/``seed``; use for checks only.
    """

    def __init__(self, num_features: int = 32, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.num_features = num_features
        self.convs = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, num_features // 2, 3, stride=2), nn.ReLU()
        )
        with torch.no_grad():
            for p in self.convs.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        f = self.convs(x.float() * 2 - 1)
        return torch.cat([f.mean((2, 3)), f.std((2, 3))], dim=1)


def build_feature_extractor(features: str = "inception", inception_weights: str | None = None) -> nn.Module:
    if features == "inception":
        return InceptionFeatures(inception_weights).eval()
    if features == "random":
        return RandomConvFeatures().eval()
    raise ConfigError(f"fid.features must be one of {FEATURES}, got {features!r}")


class FidKid:
    """FID and KID between two streams of images (float [0, 1], any size, one or a batch at a time)."""

    def __init__(self, extractor: nn.Module, kid_subset_size: int = 1000, device: torch.device | str = "cpu"):
        self.fid = FrechetInceptionDistance(feature=extractor, normalize=True).to(device)
        with warnings.catch_warnings():  # KID keeps every feature vector (2048 floats per image): fine for test sets
            warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
            self.kid = KernelInceptionDistance(feature=extractor, normalize=True, subset_size=kid_subset_size).to(device)
        self.kid_subset_size = kid_subset_size
        self.device = device
        self.n = {"real": 0, "fake": 0}

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        images = images.to(self.device).float()
        images = images[None] if images.dim() == 3 else images
        self.fid.update(images, real=real)
        self.kid.update(images, real=real)
        self.n["real" if real else "fake"] += images.shape[0]

    def compute(self) -> dict[str, float | None]:
        """``fid``, ``kid_mean``, ``kid_std``; None where fewer than 2 images of either kind were seen."""
        if min(self.n.values()) < 2:
            return {"fid": None, "kid_mean": None, "kid_std": None}
        self.kid.subset_size = min(self.kid_subset_size, *self.n.values())
        kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    return float(peak_signal_noise_ratio(pred[None].float(), target[None].float(), data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM (Gaussian 11x11 window; smaller for tiny images) of images in [0, 1]."""
    side = min(pred.shape[-2:])
    kernel = 11 if side >= 11 else max(3, side - (1 - side % 2))
    return float(structural_similarity_index_measure(pred[None].float(), target[None].float(), data_range=1.0, kernel_size=kernel))
