"""The systems: LightningModules that train translation models, and the losses, pools and LR policies they use."""

from .base import UnpairedTranslationModel
from .cyclegan import CycleGAN

__all__ = ["CycleGAN", "UnpairedTranslationModel"]
