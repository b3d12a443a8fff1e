"""Export one generator to TorchScript or ONNX (the model pads and crops itself, so any input size works), or every
generator of a checkpoint to a folder in the Hugging Face hub layout (format=hf: config.json, model.safetensors and a
model card filled from the run), loadable by predict.py, evaluate.py and ``Translator.from_pretrained``.

TorchScript/ONNX input and output: (N, C, H, W) in [-1, 1], checked against eager PyTorch before this returns; the
hub folder is checked by loading it back (bit-identical translations).

    python export.py ckpt_path=<run>/checkpoints/last.ckpt                # -> <run>/export/last/gen_a2b.pt
    python export.py ckpt_path=<run>/checkpoints/last.ckpt direction=b2a format=onnx output=gen_b2a.onnx
    python export.py ckpt_path=<run>/checkpoints/best.ckpt format=hf      # -> <run>/export/best/hf/
    python export.py ckpt_path=<run>/checkpoints/best.ckpt format=hf push_to_hub=me/horse2zebra  # needs [hub]
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.checkpoints.pretrained_folder import upload_pretrained
from cyclegan_lightning.cli import output_dir_for, run_command
from cyclegan_lightning.errors import ConfigError, CycleGANError
from cyclegan_lightning.inference import load_generators
from cyclegan_lightning.inference.export import export_generator, export_pretrained

EXTENSIONS = {"torchscript": ".pt", "onnx": ".onnx", "hf": ""}  # hf: a folder


def default_output(ckpt_path: str | Path, direction: str, fmt: str) -> Path:
    """``<run>/export/<checkpoint name>/gen_<direction>.<pt|onnx>``, or ``.../hf/`` for the hub layout
    (``./export/...`` outside a run)."""
    if fmt not in EXTENSIONS:
        raise ConfigError(f"format must be one of {', '.join(EXTENSIONS)}, got {fmt!r}")
    if fmt == "hf":
        return output_dir_for(ckpt_path, "export") / "hf"
    return output_dir_for(ckpt_path, "export") / f"gen_{direction}{EXTENSIONS[fmt]}"


def run(cfg: DictConfig):
    """Export as ``cfg`` says; returns (path, max |exported - eager|) (0.0 for the hub layout, checked bit-exact).
    The summary is logged once, by the exporter."""
    output = cfg.output or default_output(cfg.ckpt_path, cfg.direction, cfg.format)
    loaded = load_generators(cfg.ckpt_path, arch=cfg.translator.arch, norm=cfg.translator.norm, use_ema=cfg.use_ema)
    if cfg.format == "hf":
        folder = export_pretrained(loaded, output, cfg.license)
        if cfg.push_to_hub:
            url = upload_pretrained(folder, cfg.push_to_hub)
            logging.getLogger("export").info("uploaded %s to the hub: %s", folder, url)
        return folder, 0.0
    if cfg.direction not in loaded.generators:
        raise CycleGANError(f"{cfg.ckpt_path} has no {cfg.direction} generator (it has {', '.join(loaded.generators)})")
    channels = loaded.channels[cfg.direction[0]]
    return export_generator(loaded.generators[cfg.direction], cfg.format, output, channels, atol=cfg.atol)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_command("export", run, cfg)


if __name__ == "__main__":
    main()
