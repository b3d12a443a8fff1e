"""Inference: load checkpoints (ours or the reference's), translate images of any size, export generators."""

from .checkpoints import LoadedGenerators, load_generators
from .translator import Translator, auto_device, build_translator, loaded_from_pil, to_pil

__all__ = [
    "LoadedGenerators",
    "Translator",
    "auto_device",
    "build_translator",
    "load_generators",
    "loaded_from_pil",
    "to_pil",
]
