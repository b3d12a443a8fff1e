"""Image-quality metrics: FID/KID (torchmetrics) with torch-fidelity's Inception weights, PSNR and SSIM.

The Inception file is fetched here, not by torchmetrics: torchmetrics would download it while the metric is
constructed, with no checksum, no timeout (a silent firewall hangs it) and no say in where it goes. Here it goes
through the tool's one download path (``cyclegan_lightning.downloads``: pinned URL and SHA-256 in its registry,
a timeout, verified, atomic, into the tool's cache) and can be turned off (``fid.download=false`` or
``CYCLEGAN_OFFLINE=1``) for air-gapped machines. A verified copy in torch's hub cache, where torch-fidelity and
earlier versions of this tool put it, is used as it is.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from cyclegan_lightning.downloads import DEFAULT_TIMEOUT_S, Artefact, DownloadError, artefact, fetch, matches
from cyclegan_lightning.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
FEATURES = ("inception", "random")
INCEPTION = artefact("metric-weights", "inception")  # torch-fidelity's file, the one torchmetrics' FID/KID load
INCEPTION_FILE = INCEPTION.filename


class MissingWeightsError(CheckpointError):
    """The Inception weights FID/KID need are not on this machine (and could not be downloaded)."""


class MissingPackageError(ConfigError):
    """torch-fidelity (the ``fid`` extra) is not installed."""


def torch_hub_inception_path(source: Artefact = INCEPTION) -> Path:
    """Where torch-fidelity (and this tool before its own cache) keep the file: ``$TORCH_HOME/hub/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / source.filename


def _manual_fix(source: Artefact, path: str | None) -> str:
    alternatives = (
        ""
        if path
        else f" A verified copy at {torch_hub_inception_path(source)} (torch-fidelity's place) is used too, or give "
        "any copy with fid.inception_weights=/path/to/file."
    )
    return f"FID/KID need the Inception-v3 weights {source.filename}.{alternatives} To skip them: fid.enabled=false."


def resolve_inception_weights(
    path: str | os.PathLike | None = None,
    download: bool = True,  # fetch into the cache when absent (never when CYCLEGAN_OFFLINE=1)
    source: Artefact = INCEPTION,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """The Inception weights file to use, checked to exist and to hold only tensors; raises with the fix if not.

    An explicit ``path`` is used as given (never downloaded to); else a verified copy in torch's hub cache, else
    the tool's cache, filled on first use."""
    if path:
        target = Path(path).expanduser()
        if not target.is_file():
            raise MissingWeightsError(f"no file {target}. {_manual_fix(source, str(path))}")
    elif matches(torch_hub_inception_path(source), source):
        target = torch_hub_inception_path(source)
    else:
        try:
            target = fetch(source, timeout=timeout, downloads_off=None if download else "fid.download=false")
        except DownloadError as exc:
            raise MissingWeightsError(f"{exc} {_manual_fix(source, None)}") from None
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- truncated copy, HTML error page, ...
        raise MissingWeightsError(
            f"{target} cannot be read as a weights file ({type(exc).__name__}). {_manual_fix(source, path)}"
        ) from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise MissingWeightsError(
            f"{target} is not the torch-fidelity Inception state_dict. {_manual_fix(source, path)}"
        )
    return target


class InceptionFeatures(nn.Module):
    """2048-d pool features of torch-fidelity's Inception-v3 (the FID standard) for float images in [0, 1]."""

    num_features = 2048

    def __init__(self, weights_path: str | os.PathLike | None = None, download: bool = True):
        super().__init__()
        try:  # before a 92 MB download that could not be used
            import torch_fidelity  # noqa: F401
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError:
            raise MissingPackageError(
                "FID/KID with Inception need torch-fidelity: pip install 'cyclegan-lightning[fid]' "
                "(or set fid.enabled=false)"
            ) from None
        path = resolve_inception_weights(weights_path, download)  # ours, so torchmetrics never downloads
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )

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


def build_feature_extractor(
    features: str = "inception", inception_weights: str | None = None, download: bool = True
) -> nn.Module:
    if features == "inception":
        return InceptionFeatures(inception_weights, download).eval()
    if features == "random":
        return RandomConvFeatures().eval()
    raise ConfigError(f"fid.features must be one of {FEATURES}, got {features!r}")


def fid_extractor(
    enabled: bool | str = "auto",  # true: FID/KID or an error | false: none | auto: FID/KID when possible
    features: str = "inception",
    inception_weights: str | None = None,
    download: bool = True,
) -> tuple[nn.Module | None, str | None]:
    """(extractor, None), or (None, why FID/KID are left out). Only ``enabled=auto`` turns a missing torch-fidelity,
    missing weights or a failed download into a reason instead of an error."""
    if enabled not in (True, False, "auto"):
        raise ConfigError(f"fid.enabled must be true, false or auto, got {enabled!r}")
    if enabled is False:
        return None, "fid.enabled=false"
    try:
        return build_feature_extractor(features, inception_weights, download), None
    except (MissingWeightsError, MissingPackageError) as exc:
        if enabled is True:
            raise
        return None, str(exc)


class FidKid:
    """FID and KID between two streams of images (float [0, 1], any size, one or a batch at a time)."""

    def __init__(self, extractor: nn.Module, kid_subset_size: int = 1000, device: torch.device | str = "cpu"):
        self.fid = FrechetInceptionDistance(feature=extractor, normalize=True).to(device)
        with warnings.catch_warnings():  # KID keeps every feature vector (2048 floats per image): fine for test sets
            warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
            self.kid = KernelInceptionDistance(feature=extractor, normalize=True, subset_size=kid_subset_size).to(
                device
            )
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
