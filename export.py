"""Export one generator to TorchScript or ONNX; the model pads and crops itself, so any input size works.

Input and output: (N, C, H, W) in [-1, 1]. The export is checked against eager PyTorch before this returns.

    python export.py ckpt_path=<run>/checkpoints/last.ckpt direction=a2b format=torchscript output=gen_a2b.pt
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.errors import CycleGANError
from cyclegan_lightning.inference import load_generators
from cyclegan_lightning.inference.export import export_generator

log = logging.getLogger("export")


def run(cfg: DictConfig):
    loaded = load_generators(cfg.ckpt_path, arch=cfg.translator.arch, norm=cfg.translator.norm)
    if cfg.direction not in loaded.generators:
        raise CycleGANError(f"{cfg.ckpt_path} has no {cfg.direction} generator (it has {', '.join(loaded.generators)})")
    channels = loaded.channels[cfg.direction[0]]
    return export_generator(loaded.generators[cfg.direction], cfg.format, cfg.output, channels, atol=cfg.atol)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        path, err = run(cfg)
    except CycleGANError as exc:
        log.error("%s", exc)
        sys.exit(2)
    print(f"exported {path} ({cfg.format}); max |exported - eager| = {err:.2e}")


if __name__ == "__main__":
    main()
