"""Plain ``nn.Module`` networks of CycleGAN; nothing here imports Lightning."""

from .discriminators import NLayerDiscriminator, PixelDiscriminator
from .generators import ResnetGenerator, UnetGenerator, output_size, set_activation_checkpointing
from .layers import init_weights

__all__ = ["NLayerDiscriminator", "PixelDiscriminator", "ResnetGenerator", "UnetGenerator", "init_weights", "output_size",
           "set_activation_checkpointing"]
