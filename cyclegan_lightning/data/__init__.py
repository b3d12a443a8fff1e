"""Unpaired image data: robust file loading, the reference's preprocessing, datasets and the DataModule."""

from .datamodule import UnpairedDataModule
from .datasets import SingleDomainDataset, UnpairedImageDataset
from .images import ImageLoadError, LoadedImage, find_images, load_image
from .transforms import build_transform

__all__ = [
    "ImageLoadError",
    "LoadedImage",
    "SingleDomainDataset",
    "UnpairedDataModule",
    "UnpairedImageDataset",
    "build_transform",
    "find_images",
    "load_image",
]
