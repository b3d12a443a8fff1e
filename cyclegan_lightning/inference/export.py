"""Export a generator to TorchScript or ONNX, with the padding/cropping inside, and check it against eager.

The exported model takes (N, C, H, W) in [-1, 1] of any size and returns the same size, like
``CycleGAN.forward``. ONNX needs the optional extra: ``pip install 'cyclegan-lightning[onnx]'``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_lightning.errors import ConfigError, CycleGANError

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")


class ExportError(CycleGANError):
    """Export failed, or the exported model disagrees with the eager one."""


class PaddedGenerator(nn.Module):
    """A generator plus reflect padding to its size multiple and the crop back: any input size in, same size out."""

    def __init__(self, generator: nn.Module, size_multiple: int = 4):
        super().__init__()
        self.generator = generator
        self.size_multiple = size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        pad_h = (self.size_multiple - h % self.size_multiple) % self.size_multiple
        pad_w = (self.size_multiple - w % self.size_multiple) % self.size_multiple
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
        return self.generator(x)[:, :, :h, :w]


def export_torchscript(generator: nn.Module, path: Path) -> Path:
    wrapped = PaddedGenerator(generator, int(getattr(generator, "size_multiple", 4))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still the portable format
        scripted = torch.jit.script(wrapped)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def export_onnx(generator: nn.Module, path: Path, example: torch.Tensor, opset: int = 18) -> Path:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'cyclegan-lightning[onnx]'") from None
    wrapped = PaddedGenerator(generator, int(getattr(generator, "size_multiple", 4))).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        wrapped, (example,), str(path), input_names=["image"], output_names=["translated"],
        dynamic_axes={"image": dims, "translated": dims}, opset_version=opset, dynamo=False,
    )  # fmt: skip


def _run_exported(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")(x)
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("checking an ONNX export needs onnxruntime: pip install 'cyclegan-lightning[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


@torch.no_grad()
def check_export(fmt: str, path: Path, generator: nn.Module, sizes: list[tuple[int, int]], channels: int,
                 atol: float = 1e-4) -> float:  # fmt: skip
    """Largest |exported - eager| over random inputs of ``sizes`` (odd ones included); raises above ``atol``."""
    from cyclegan_lightning.inference.tiling import translate_padded

    worst = 0.0
    gen = generator.eval()
    for h, w in sizes:
        x = torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(h * 1000 + w)) * 2 - 1
        got = _run_exported(fmt, path, x)
        want = translate_padded(gen, x)
        if got.shape != want.shape:
            raise ExportError(f"{path}: exported model gives shape {tuple(got.shape)} for {h}x{w}, eager {tuple(want.shape)}")
        worst = max(worst, float((got - want).abs().max()))
    if worst > atol:
        raise ExportError(f"{path}: exported model differs from eager by {worst:.2e} (> atol {atol:.0e}); do not use it.")
    return worst


def export_generator(generator: nn.Module, fmt: str, path: str | Path, channels: int = 3,
                     check_sizes: list[tuple[int, int]] | None = None, atol: float = 1e-4) -> tuple[Path, float]:  # fmt: skip
    """Export and verify; returns the file and the largest difference from eager found by the check."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    generator = generator.cpu().eval()
    m = int(getattr(generator, "size_multiple", 4))
    sizes = check_sizes or [(2 * m, 2 * m), (2 * m + 3, 3 * m - 1)]
    path = Path(path)
    if fmt == "torchscript":
        export_torchscript(generator, path)
    else:
        export_onnx(generator, path, torch.zeros(1, channels, 2 * m, 2 * m))
    err = check_export(fmt, path, generator, sizes, channels, atol)
    log.info("exported %s (%s); max |exported - eager| = %.2e over sizes %s", path, fmt, err, sizes)
    return path, err
