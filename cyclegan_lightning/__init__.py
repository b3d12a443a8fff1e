"""cyclegan-lightning: unpaired image-to-image translation (CycleGAN) with PyTorch Lightning and Hydra."""

from cyclegan_lightning.models import CycleGAN

__all__ = ["CycleGAN"]
__version__ = "0.1.0"
