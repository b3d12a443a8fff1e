"""Discriminators: the PatchGAN of pix2pix (70x70 receptive field with 3 layers) and the 1x1 pixel GAN.

Layout matches the reference implementation (``model.0, model.2, model.5, ...``) so its ``*_net_D_*.pth`` load.
No sigmoid at the end: the GAN losses work on logits (vanilla) or raw scores (lsgan, wgangp).

``spectral_norm=True`` (off by default) divides every conv's weight by its largest singular value (Miyato et al.,
ICLR 2018), estimated by one power iteration per training forward (``torch.nn.utils.parametrizations``). The
state-dict keys then become ``*.parametrizations.weight.original`` plus the power-iteration vectors ``_u``/``_v``,
which are saved and restored with the rest (resume is exact); such a discriminator no longer loads reference files.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .layers import conv_bias, norm_layer


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, one stride-1, then a 1-channel map of patch scores.

    ``n_layers=3`` is the 70x70 PatchGAN of the paper; a 256x256 input gives a 30x30 map.
    """

    def __init__(
        self,
        input_nc: int = 3,  # channels of the domain this discriminator judges
        ndf: int = 64,  # filters in the first conv layer, doubled per layer up to 8x
        n_layers: int = 3,  # 3 = the 70x70 PatchGAN
        norm: str = "instance",  # instance | batch | none
        spectral_norm: bool = False,  # spectral normalisation of every conv (Lipschitz control)
    ):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=bias),
                make_norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = apply_spectral_norm(nn.Sequential(*layers), spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: judges each pixel's colour on its own (no spatial context)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance", spectral_norm: bool = False):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
            make_norm(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias),
        )
        apply_spectral_norm(self.net, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def apply_spectral_norm(net: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral-normalise every conv of ``net`` in place (when ``enabled``); ``init_weights`` initialises the
    unnormalised weight (``parametrizations.weight.original``) of such a conv."""
    if enabled:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                _spectral_norm(m)
    return net
