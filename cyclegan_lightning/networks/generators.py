"""Generators of CycleGAN (Zhu et al., ICCV 2017): the ResNet generator of Johnson et al. and the U-Net of pix2pix.

Module layout (a single ``nn.Sequential`` named ``model``; the U-Net's nested skip blocks) is kept identical to the
reference implementation, so its ``latest_net_G*.pth`` state dicts load here with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import checkpointed, conv_bias, norm_layer

PADDINGS = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d}


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-[dropout]-conv-norm(x), with explicit padding so ``conv_block`` indices match the reference.

    With ``checkpointing`` set (``set_activation_checkpointing``) the block keeps only its input for the backward
    pass and recomputes the rest there: same gradients, less memory.
    """

    def __init__(self, dim: int, padding_type: str, norm: str, use_dropout: bool):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = []
        for second in (False, True):
            pad = 0
            if padding_type in PADDINGS:
                layers.append(PADDINGS[padding_type](1))
            elif padding_type == "zero":
                pad = 1
            else:
                raise ValueError(f"padding_type must be reflect, replicate or zero, got {padding_type!r}")
            layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=pad, bias=bias), make_norm(dim)]
            if not second:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)
        self.checkpointing = False  # a plain attribute, not state: checkpoint keys stay the reference's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing:
            return self._checkpointed_residual(x)
        return self._residual(x)

    @torch.jit.unused  # training only; TorchScript export compiles the plain path (unannotated: Tensor -> Tensor)
    def _checkpointed_residual(self, x):
        return checkpointed(self._residual, x, modules=self.conv_block)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Stem (7x7), two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings, 7x7 + tanh.

    Any input size works; the output side is ``4 * ceil(side / 4)`` (crop back to the input size for odd sizes).
    """

    size_multiple = 4  # inputs whose sides are multiples of this come back at exactly the same size

    def __init__(
        self,
        input_nc: int = 3,  # channels of the input domain (1 grayscale, 3 RGB)
        output_nc: int = 3,  # channels of the output domain
        ngf: int = 64,  # filters in the first conv layer; doubled at each downsampling
        n_blocks: int = 9,  # residual blocks: 9 for 256x256 training, 6 for 128x128
        norm: str = "instance",  # instance | batch | none
        use_dropout: bool = False,  # dropout 0.5 inside each residual block
        padding_type: str = "reflect",  # reflect | replicate | zero, inside residual blocks
    ):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # downsample
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                make_norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, padding_type, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(2):  # upsample
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                make_norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of ``self.model[i]`` for each ``i`` in ``layers``, stopping after the last (no decoder pass).

        CUT's PatchNCE taps (the official ``netG(x, nce_layers, encode_only=True)``). With this layout (no
        anti-aliasing, the official ``--no_antialias``), CUT's default ``0,4,8,12,16`` on ``n_blocks=9`` select: 0 the
        reflection-padded input, 4 the first stride-2 conv (before its norm), 8 the second down-conv's norm, 12 and 16
        ResnetBlocks 3 and 7.
        """
        layers = self._check_layers(layers)
        feats = []
        for i, module in enumerate(self.model[: layers[-1] + 1]):
            x = module(x)
            if i in layers:
                feats.append(x)
        return feats

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """Channels of ``encode``'s outputs, read off the layers (to build CUT's projection head before any data)."""
        layers, channels, out = self._check_layers(layers), self.model[1].in_channels, []
        for i, module in enumerate(self.model[: layers[-1] + 1]):
            channels = getattr(module, "out_channels", channels)  # convs change it; pads, norms and blocks keep it
            if i in layers:
                out.append(channels)
        return out

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        layers = [int(i) for i in layers]
        if not layers or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= len(self.model):
            raise ValueError(
                f"encoder layers must be distinct ascending indices in 0..{len(self.model) - 1}, got {layers}"
            )
        return layers


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: down, the inner levels, up, concatenated with the input (except the outermost).

    With ``checkpointing`` set, an inner level's down path (conv, norm) and up path (conv, norm, dropout) each keep
    only their input for the backward pass. The in-place activations that open each path stay outside the
    recomputed part: the reference's in-place LeakyReLU also rewrites the skip tensor, and running it twice would not.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        downrelu, uprelu = nn.LeakyReLU(0.2, True), nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, uprelu, upconv, make_norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, make_norm(inner_nc), submodule, uprelu, upconv, make_norm(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)
        self.checkpointing = False  # a plain attribute, not state: checkpoint keys stay the reference's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        if self.checkpointing:
            return torch.cat([x, self._checkpointed_inner(x)], 1)
        return torch.cat([x, self.model(x)], 1)

    @torch.jit.unused  # training only; TorchScript export compiles the plain path (unannotated: Tensor -> Tensor)
    def _checkpointed_inner(self, x):
        """``self.model(x)``, layer for layer, with the down and up paths recomputed in the backward pass."""
        layers = list(self.model)
        inner = next((i for i, m in enumerate(layers) if isinstance(m, UnetSkipConnectionBlock)), None)
        if inner is None:  # innermost: [downrelu, downconv, uprelu, upconv, norm]
            down, sub, up = layers[:2], [], layers[2:]
        else:
            down, sub, up = layers[:inner], [layers[inner]], layers[inner + 1 :]
        x = down[0](x)  # in-place LeakyReLU, outside: it also rewrites the skip tensor, as in the reference
        x = checkpointed(nn.Sequential(*down[1:]), x)
        for block in sub:
            x = block(x)
        x = up[0](x)  # in-place ReLU, outside for the same reason
        return checkpointed(nn.Sequential(*up[1:]), x)


class UnetGenerator(nn.Module):
    """pix2pix U-Net with ``num_downs`` halvings: 7 for ``unet_128``, 8 for ``unet_256``.

    Input sides must be multiples of ``2 ** num_downs``.
    """

    def __init__(
        self,
        input_nc: int = 3,  # channels of the input domain
        output_nc: int = 3,  # channels of the output domain
        num_downs: int = 8,  # 7 for 128x128 inputs, 8 for 256x256
        ngf: int = 64,  # filters in the outermost conv layer
        norm: str = "instance",  # instance | batch | none (pix2pix uses batch)
        use_dropout: bool = False,  # dropout 0.5 in the inner levels
    ):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        self.size_multiple = 2**num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def set_activation_checkpointing(net: nn.Module, enabled: bool = True) -> int:
    """Recompute ``net``'s residual blocks (ResNet) or inner levels (U-Net) in the backward pass instead of storing
    their activations; returns how many blocks now do. Gradients stay bitwise equal; state-dict keys too."""
    blocks = [m for m in net.modules() if isinstance(m, (ResnetBlock, UnetSkipConnectionBlock))]
    for block in blocks:
        block.checkpointing = enabled and not getattr(block, "outermost", False)
    return sum(b.checkpointing for b in blocks)


def output_size(side: int, size_multiple: int) -> int:
    """Side of a generator's output for an input side: rounded up to the generator's ``size_multiple``."""
    return size_multiple * math.ceil(side / size_multiple)
