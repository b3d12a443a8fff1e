"""torch.hub entry points: ``torch.hub.load(<this repository>, "cyclegan", ...)``.

    translator = torch.hub.load("path/to/cyclegan-lightning", "cyclegan", source="local", ckpt_path="exported/")
    translator = torch.hub.load("path/to/cyclegan-lightning", "cyclegan", source="local", pretrained="horse2zebra")
    zebra = translator(Image.open("horse.jpg"))                       # PIL in, PIL out, any size

``cyclegan`` returns a ``Translator`` rather than a bare ``nn.Module``: a generator alone only takes (N, C, H, W) in
[-1, 1] with sides its size multiple allows, while users of torch.hub want to pass an image. The Translator adds the
[0, 1] <-> [-1, 1] mapping, padding to any size and cropping back, tiling of large images, alpha, devices, precision
and both directions. ``generator`` returns the bare module (padded to any size, [-1, 1] in and out) for those who
build their own pipeline, trace or fine-tune it.
"""

from __future__ import annotations

dependencies = [
    "torch",
    "torchvision",
    "lightning",
    "hydra",
    "omegaconf",
    "PIL",
    "numpy",
    "torchmetrics",
    "matplotlib",
    "safetensors",
]


def _checkpoint(pretrained: str | None, ckpt_path) -> str:
    if (pretrained is None) == (ckpt_path is None):
        raise ValueError(
            'give exactly one of pretrained="horse2zebra" (a published generator) or ckpt_path=<.ckpt, '
            "*_net_G*.pth or model folder>"
        )
    return f"pretrained:{pretrained}" if pretrained is not None else str(ckpt_path)


def cyclegan(pretrained: str | None = None, ckpt_path=None, direction: str = "a2b", **translator_kwargs):
    """A ``Translator`` for a published generator (``pretrained="horse2zebra"``, ``"style_monet"``, ...) or a
    checkpoint (``ckpt_path``: a train.py ``.ckpt``, a reference ``*_net_G*.pth``, a folder from ``export.py
    format=hf``). ``direction`` must be one it has (checked now); ``translator_kwargs``: ``device``, ``precision``,
    ``tile_size``, ``backend`` ... (``Translator``)."""
    from cyclegan_lightning.inference import Translator, load_generators

    translator = Translator(load_generators(_checkpoint(pretrained, ckpt_path)), **translator_kwargs)
    translator.generator(direction)
    return translator


def generator(pretrained: str | None = None, ckpt_path=None, direction: str = "a2b"):
    """The bare ``direction`` generator as an eval-mode ``nn.Module``: (N, C, H, W) in [-1, 1] of any size in, the
    same size out (padded to its size multiple and cropped back)."""
    from cyclegan_lightning.inference import Translator, load_generators
    from cyclegan_lightning.inference.export import PaddedGenerator

    translator = Translator(load_generators(_checkpoint(pretrained, ckpt_path)), device="cpu")
    return PaddedGenerator(translator.generator(direction)).eval()
