"""Inference: load checkpoints (ours or the reference's), translate images of any size, export generators."""

from cyclegan_lightning.checkpoints.generators import LoadedGenerators, load_generators
from cyclegan_lightning.data.images import loaded_from_pil, to_pil

from .translator import Translator, auto_device, build_translator

__all__ = [
    "LoadedGenerators",
    "Translator",
    "auto_device",
    "build_translator",
    "load_generators",
    "loaded_from_pil",
    "to_pil",
]
