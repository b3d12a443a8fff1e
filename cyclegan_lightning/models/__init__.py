"""The systems: LightningModules that train translation models, and the losses, pools and LR policies they use."""

from .base import UnpairedTranslationModel
from .cut import CUT
from .cyclegan import CycleGAN

__all__ = ["CUT", "CycleGAN", "UnpairedTranslationModel"]
