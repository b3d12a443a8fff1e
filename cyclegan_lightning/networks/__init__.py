"""Plain ``nn.Module`` networks of CycleGAN and CUT; nothing here imports Lightning."""

from .discriminators import NLayerDiscriminator, PixelDiscriminator
from .generators import ResnetGenerator, UnetGenerator, output_size, set_activation_checkpointing
from .layers import init_weights
from .patch_sampler import PatchSampleF

__all__ = [
    "NLayerDiscriminator",
    "PatchSampleF",
    "PixelDiscriminator",
    "ResnetGenerator",
    "UnetGenerator",
    "init_weights",
    "output_size",
    "set_activation_checkpointing",
]
