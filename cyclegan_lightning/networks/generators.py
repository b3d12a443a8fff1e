"""Generators of CycleGAN (Zhu et al., ICCV 2017): the ResNet generator of Johnson et al. and the U-Net of pix2pix.

Module layout (a single ``nn.Sequential`` named ``model``; the U-Net's nested skip blocks) is kept identical to the
reference implementation, so its ``latest_net_G*.pth`` state dicts load here with ``strict=True``.

``upsample="resize"`` (off by default) replaces each stride-2 transposed convolution by a nearest-neighbour 2x
upsampling and a 3x3 convolution (``up_conv``), which cannot produce checkerboard artifacts (Odena et al., Distill
2016, "Deconvolution and Checkerboard Artifacts"). Module indices stay as they are (the pair is one
``nn.Sequential``), so only the up-convolution keys change (``model.19.weight`` -> ``model.19.1.weight``).

``downsample="antialias"`` and ``upsample="antialias"`` give the ResNet generator the layout of the official CUT code
(taesungp/contrastive-unpaired-translation, its default; ``--no_antialias`` / ``--no_antialias_up`` turn each off):
each stride-2 conv becomes a stride-1 conv, norm, ReLU and a ``BlurDownsample``, and each transposed conv a
``BlurUpsample`` then a 3x3 conv. Every layer stays its own ``model`` entry, as there, so the official CUT/FastCUT
``latest_net_G.pth`` loads with ``strict=True`` and CUT's ``nce_layers`` indices select the same modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import BlurDownsample, BlurUpsample, checkpointed, conv_bias, norm_layer

PADDINGS = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d}
UPSAMPLINGS = ("transpose", "resize")  # of every generator; the ResNet also takes "antialias"
DOWNSAMPLINGS = ("stride", "antialias")  # the ResNet's


def up_conv(
    in_nc: int, out_nc: int, upsample: str, bias: bool, kernel_size: int, padding: int, output_padding: int = 0
) -> nn.Module:
    """A 2x upsampling layer: the reference's stride-2 ``ConvTranspose2d`` (``transpose``), or nearest-neighbour
    resize then a 3x3 conv (``resize``), the same output size without checkerboard artifacts."""
    if upsample == "transpose":
        return nn.ConvTranspose2d(
            in_nc, out_nc, kernel_size, stride=2, padding=padding, output_padding=output_padding, bias=bias
        )
    if upsample == "resize":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_nc, out_nc, kernel_size=3, padding=1, bias=bias)
        )
    raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {upsample!r}")


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
        upsample: str = "transpose",  # transpose (the reference) | resize (nearest 2x + conv) | antialias (CUT's blur)
        downsample: str = "stride",  # stride (stride-2 conv, the reference) | antialias (conv, then CUT's blur pool)
    ):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if downsample not in DOWNSAMPLINGS:
            raise ValueError(f"downsample must be one of {DOWNSAMPLINGS}, got {downsample!r}")
        if upsample not in (*UPSAMPLINGS, "antialias"):
            raise ValueError(f"upsample must be one of {(*UPSAMPLINGS, 'antialias')}, got {upsample!r}")
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # downsample
            mult = 2**i
            blur = downsample == "antialias"
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=1 if blur else 2, padding=1, bias=bias),
                make_norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
            if blur:
                layers.append(BlurDownsample(ngf * mult * 2))
        layers += [ResnetBlock(ngf * 4, padding_type, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(2):  # upsample
            mult = 2 ** (2 - i)
            if upsample == "antialias":
                up = [BlurUpsample(ngf * mult), nn.Conv2d(ngf * mult, ngf * mult // 2, 3, padding=1, bias=bias)]
            else:
                up = [up_conv(ngf * mult, ngf * mult // 2, upsample, bias, kernel_size=3, padding=1, output_padding=1)]
            layers += [
                *up,
                make_norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.checkpointing = False  # recompute the stages around the blocks too (set_activation_checkpointing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing:
            return self._checkpointed_forward(x)
        return self.model(x)

    @torch.jit.unused  # training only, like ResnetBlock._checkpointed_residual
    def _checkpointed_forward(self, x):
        """``self.model(x)`` with the layers before the first residual block (stem, downsampling) and those after the
        last (upsampling, output) each recomputed in the backward pass from their input: at high resolution they
        hold the largest activations (64 and 128 channels at full and half size)."""
        layers = list(self.model)
        blocks = [i for i, m in enumerate(layers) if isinstance(m, ResnetBlock)]
        first, end = (blocks[0], blocks[-1] + 1) if blocks else (len(layers), len(layers))
        x = checkpointed(nn.Sequential(*layers[:first]), x)
        for block in layers[first:end]:  # each block checkpoints itself
            x = block(x)
        return checkpointed(nn.Sequential(*layers[end:]), x) if end < len(layers) else x

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of ``self.model[i]`` for each ``i`` in ``layers``, stopping after the last (no decoder pass).

        CUT's PatchNCE taps (the official ``netG(x, nce_layers, encode_only=True)``). CUT's default ``0,4,8,12,16``
        on ``n_blocks=9`` select: 0 the reflection-padded input; with ``downsample="stride"`` (the official
        ``--no_antialias``) 4 the first stride-2 conv (before its norm), 8 the second down-conv's norm, 12 and 16
        ResnetBlocks 3 and 7; with ``downsample="antialias"`` (the official default) 4 and 8 the two stride-1 down
        convs (before their norms), 12 and 16 ResnetBlocks 1 and 5.
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
        upsample: str = "transpose",  # transpose | resize (see up_conv)
    ):
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        downrelu, uprelu = nn.LeakyReLU(0.2, True), nn.ReLU(True)
        if outermost:
            upconv = up_conv(inner_nc * 2, outer_nc, upsample, True, kernel_size=4, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = up_conv(inner_nc, outer_nc, upsample, bias, kernel_size=4, padding=1)
            layers = [downrelu, downconv, uprelu, upconv, make_norm(outer_nc)]
        else:
            upconv = up_conv(inner_nc * 2, outer_nc, upsample, bias, kernel_size=4, padding=1)
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
        upsample: str = "transpose",  # transpose (the reference) | resize (nearest 2x + conv: no checkerboard)
    ):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        self.size_multiple = 2**num_downs
        up = {"norm": norm, "upsample": upsample}
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, **up)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **up)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, **up)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, **up)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, **up)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, **up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def set_activation_checkpointing(net: nn.Module, enabled: bool = True) -> int:
    """Recompute ``net``'s residual blocks and the stages around them (ResNet) or inner levels (U-Net) in the backward
    pass instead of storing their activations; returns how many blocks now do. Gradients stay bitwise equal;
    state-dict keys too."""
    for gen in net.modules():
        if isinstance(gen, ResnetGenerator):
            gen.checkpointing = enabled
    blocks = [m for m in net.modules() if isinstance(m, (ResnetBlock, UnetSkipConnectionBlock))]
    for block in blocks:
        block.checkpointing = enabled and not getattr(block, "outermost", False)
    return sum(b.checkpointing for b in blocks)


def output_size(side: int, size_multiple: int) -> int:
    """Side of a generator's output for an input side: rounded up to the generator's ``size_multiple``."""
    return size_multiple * math.ceil(side / size_multiple)
