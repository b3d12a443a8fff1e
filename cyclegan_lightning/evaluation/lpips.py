"""LPIPS (Zhang et al., CVPR 2018), the learned perceptual distance users expect beside PSNR/SSIM (lower is closer).

The network is torchmetrics' port of the official one, with the official linear heads that torchmetrics ships in
its package. Its ImageNet backbone (torchvision's AlexNet or VGG-16 file) is fetched here, through the one verified
downloader (``cyclegan_lightning.downloads``: one cache, ``CYCLEGAN_OFFLINE=1``), not by torchvision, which would
download it while the metric is built, outside that cache and that switch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cyclegan_lightning.downloads import DownloadError, artefact, fetch
from cyclegan_lightning.errors import CheckpointError, ConfigError

BACKBONES = {"alex": "lpips-alex", "vgg": "lpips-vgg"}  # LPIPS network -> its backbone in the registry
MIN_SIDE = 32  # AlexNet's pooling leaves nothing of a side under 31 px: smaller pairs are upscaled to this first


class MissingLpipsWeightsError(CheckpointError):
    """The backbone weights LPIPS needs are not on this machine (and could not be downloaded)."""


def resolve_backbone_weights(net: str = "alex", path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The backbone file: ``path`` as given, else the downloader's verified cache (filled on first use)."""
    if net not in BACKBONES:
        raise ConfigError(f"lpips.net must be one of {', '.join(BACKBONES)}, got {net!r}")
    if path:
        target = Path(path).expanduser()
        if not target.is_file():
            raise MissingLpipsWeightsError(f"lpips.weights={path}: no such file")
        return target
    try:
        return fetch(
            artefact("metric-weights", BACKBONES[net]), downloads_off=None if download else "lpips.download=false"
        )
    except DownloadError as exc:
        raise MissingLpipsWeightsError(f"{exc} To skip LPIPS: lpips.enabled=false.") from None


class LPIPS(nn.Module):
    """LPIPS distance between two batches of images in [-1, 1], one value per image pair."""

    def __init__(self, net: str = "alex", weights_path: str | os.PathLike | None = None, download: bool = True):
        super().__init__()
        from torchmetrics.functional.image.lpips import _LPIPS

        path = resolve_backbone_weights(net, weights_path, download)
        # pnet_rand: build the backbone without torchvision's own download; pretrained: the shipped linear heads
        self.net = _LPIPS(pretrained=True, net=net, pnet_rand=True)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 -- a truncated copy, an HTML error page ...
            raise MissingLpipsWeightsError(f"{path} cannot be read as a weights file ({type(exc).__name__})") from None
        # torchmetrics keeps torchvision's indices inside its slices: "slice2.3.weight" is "features.3.weight"
        wanted = {name: f"features.{name.split('.', 1)[1]}" for name in self.net.net.state_dict()}
        missing = sorted(key for key in wanted.values() if key not in state)
        if missing:
            raise MissingLpipsWeightsError(
                f"{path} is not torchvision's {net} state_dict (no {missing[0]}). Delete it to fetch it again."
            )
        self.net.net.load_state_dict({name: state[key] for name, key in wanted.items()})
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = (t[None] if t.dim() == 3 else t for t in (x, y))
        x, y = (t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in (x, y))  # gray: as RGB
        if min(x.shape[-2:]) < MIN_SIDE:
            scale = MIN_SIDE / min(x.shape[-2:])
            x, y = (nn.functional.interpolate(t, scale_factor=scale, mode="bilinear") for t in (x, y))
        return self.net(x.float(), y.float()).flatten()


def lpips_metric(
    enabled: bool | str = "auto", net: str = "alex", weights: str | None = None, download: bool = True
) -> tuple[LPIPS | None, str | None]:
    """(the metric, None), or (None, why) when ``enabled`` is false, or auto and the weights cannot be had."""
    if enabled is False or enabled == "false":
        return None, "lpips.enabled=false"
    try:
        return LPIPS(net, weights, download), None
    except MissingLpipsWeightsError as exc:
        if enabled == "auto":
            return None, str(exc)
        raise
