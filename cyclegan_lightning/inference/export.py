"""Export a generator to TorchScript or ONNX, with the padding/cropping inside, and check it against eager; or
every generator of a checkpoint to the Hugging Face hub layout (``export_pretrained``), checked by loading it back.

The TorchScript/ONNX model takes (N, C, H, W) in [-1, 1] of any size and returns the same size, like
``CycleGAN.forward``. ONNX needs the optional extra: ``pip install 'cyclegan-lightning[onnx]'``.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from cyclegan_lightning.checkpoints.generators import LoadedGenerators, load_generators
from cyclegan_lightning.checkpoints.pretrained_folder import is_pretrained_folder, write_pretrained_folder
from cyclegan_lightning.errors import ConfigError, CycleGANError
from cyclegan_lightning.image_range import from_unit
from cyclegan_lightning.networks.padding import min_side, pad_to_multiple, size_multiple

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")  # one generator to one file; the hub layout (every generator): export_pretrained


class ExportError(CycleGANError):
    """Export failed, or the exported model disagrees with the eager one."""


class PaddedGenerator(nn.Module):
    """A generator plus the Translator's padding (``networks.padding.pad_to_multiple``) and the crop back: any input
    size in, same size out, down to 1x1. Exported as one graph; the ``onnxruntime`` backend runs exactly this."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator
        self.size_multiple = size_multiple(generator)
        self.minimum = min_side(generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        return self.generator(pad_to_multiple(x, self.size_multiple, self.minimum))[:, :, :h, :w]


def export_torchscript(generator: nn.Module, path: Path) -> Path:
    wrapped = PaddedGenerator(generator).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still the portable format
        scripted = torch.jit.script(wrapped)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def export_onnx(
    generator: nn.Module, path: Path | io.BytesIO, example: torch.Tensor, opset: int = 18
) -> Path | io.BytesIO:
    """The padded generator as an ONNX graph with dynamic batch, height and width, to a file or an in-memory buffer."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'cyclegan-lightning[onnx]'") from None
    wrapped = PaddedGenerator(generator).eval()
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic and instance norm in eval: expected here
        torch.onnx.export(
            wrapped,
            (example,),
            path if isinstance(path, io.BytesIO) else str(path),
            input_names=["image"],
            output_names=["translated"],
            dynamic_axes={"image": dims, "translated": dims},
            opset_version=opset,
            dynamo=False,
        )
    return path


def onnx_session(model: Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session (all graph optimisations) for a file or the bytes of an ONNX model."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running ONNX needs onnxruntime: pip install 'cyclegan-lightning[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _run_exported(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")(x)
    return torch.from_numpy(onnx_session(path).run(None, {"image": x.numpy()})[0])


@torch.no_grad()
def check_export(
    fmt: str, path: Path, generator: nn.Module, sizes: list[tuple[int, int]], channels: int, atol: float = 1e-4
) -> float:
    """Largest |exported - eager| over random inputs of ``sizes`` (odd ones included); raises above ``atol``."""
    from cyclegan_lightning.networks.padding import translate_padded

    worst = 0.0
    gen = generator.eval()
    for h, w in sizes:
        x = from_unit(torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(h * 1000 + w)))
        got = _run_exported(fmt, path, x)
        want = translate_padded(gen, x)
        if got.shape != want.shape:
            raise ExportError(
                f"{path}: exported model gives shape {tuple(got.shape)} for {h}x{w}, eager {tuple(want.shape)}"
            )
        worst = max(worst, float((got - want).abs().max()))
    if worst > atol:
        raise ExportError(
            f"{path}: exported model differs from eager by {worst:.2e} (> atol {atol:.0e}); do not use it."
        )
    return worst


def export_generator(
    generator: nn.Module,
    fmt: str,
    path: str | Path,
    channels: int = 3,
    check_sizes: list[tuple[int, int]] | None = None,
    atol: float = 1e-4,
) -> tuple[Path, float]:
    """Export and verify; returns the file and the largest difference from eager found by the check."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    generator = generator.cpu().eval()
    m = int(getattr(generator, "size_multiple", 4))
    # tiny sides take the replicate path (not 1x1: a constant image, whose instance norms amplify rounding)
    sizes = check_sizes or [(1, 5), (2, 4), (2 * m, 2 * m), (2 * m + 3, 3 * m - 1)]
    path = Path(path)
    if fmt == "torchscript":
        export_torchscript(generator, path)
    else:
        export_onnx(generator, path, torch.zeros(1, channels, 2 * m, 2 * m))
    err = check_export(fmt, path, generator, sizes, channels, atol)
    log.info("exported %s (%s); max |exported - eager| = %.2e over sizes %s", path, fmt, err, sizes)
    return path, err


def pretrained_config(loaded: LoadedGenerators) -> dict:
    """config.json of the hub layout (``checkpoints.pretrained_folder`` adds the format marker and versions)."""
    if set(loaded.specs) != set(loaded.generators):
        raise ExportError(
            f"{loaded.path.name}: the generators' constructor arguments are unknown, so they cannot be rebuilt from "
            "config.json. Export from a .ckpt of train.py, a reference *_net_G*.pth or a model folder."
        )
    return {
        "model": loaded.training.get("model") or loaded.source,
        "directions": list(loaded.generators),
        "channels": loaded.channels,
        "generators": loaded.specs,
        "weights": "ema" if loaded.info.get("weights") == "ema" else "trained",
        "pixel_range": [-1, 1],  # generators map (N, C, H, W) in [-1, 1] to the same; Translator takes [0, 1] images
        "size_multiple": {d: size_multiple(g) for d, g in loaded.generators.items()},
        "source": {"kind": loaded.source, "file": loaded.path.name},
        "training": loaded.training,
    }


def export_pretrained(loaded: LoadedGenerators, folder: str | Path, license: str = "other") -> Path:
    """Write ``loaded`` (the weights it holds: the EMA where it was loaded with it) to ``folder`` in the hub layout,
    with a model card filled from its run, then load it back and check every direction translates bit-identically."""
    from cyclegan_lightning.inference.model_card import model_card, run_record

    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not is_pretrained_folder(folder):
        raise ConfigError(
            f"output={folder} is a folder of other files; the export replaces its folder, so give a new or empty one "
            "(or a model folder to overwrite)."
        )
    config = pretrained_config(loaded)
    metrics, images = run_record(loaded)
    config["training"] = {**config["training"], "metrics": metrics} if metrics else config["training"]
    card = model_card(loaded, config, images, license)
    states = {d: g.state_dict() for d, g in loaded.generators.items()}
    write_pretrained_folder(folder, config, states, card, images)
    check_pretrained(folder, loaded)
    log.info(
        "exported %s (hf): %s, %s weights, checked bit-identical after loading back",
        folder,
        "/".join(loaded.generators),
        config["weights"],
    )
    return folder


@torch.no_grad()
def check_pretrained(folder: Path, loaded: LoadedGenerators) -> None:
    """Raise ``ExportError`` unless the folder, loaded back, gives exactly ``loaded``'s output in every direction."""
    back = load_generators(folder)
    for direction, gen in loaded.generators.items():
        gen = copy.deepcopy(gen).cpu().eval()  # the translator's may sit on a GPU; compare on the CPU
        m = size_multiple(gen)
        x = torch.rand(1, loaded.channels[direction[0]], 2 * m, 2 * m, generator=torch.Generator().manual_seed(0))
        if not torch.equal(back.generators[direction](from_unit(x)), gen(from_unit(x))):
            raise ExportError(f"{folder}: the {direction} generator loaded back differs from the exported one.")
