"""Translate images with a trained generator; any size, never over an input, resumable.

python predict.py ckpt_path=outputs/demo/runs/<run>/checkpoints/last.ckpt input=data/demo/testA output_dir=out
python predict.py ckpt_path=latest_net_G.pth input=photos/ output_dir=out round_trip=true grid=true
python predict.py ckpt_path=<run> input=clip.mp4 output_dir=out video_stats=fixed   # -> out/clip.mp4
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from cyclegan_lightning.cli import run_command
from cyclegan_lightning.inference import build_translator
from cyclegan_lightning.inference.predict import run_prediction

log = logging.getLogger("predict")


def predict(cfg: DictConfig):
    """Build the Translator from ``cfg`` and translate; returns the PredictSummary (whose line is logged once, by
    ``run_prediction``)."""
    translator = build_translator(cfg.ckpt_path, cfg.translator)
    log.info("loaded %s on %s", translator.loaded.describe(), translator.device)
    inputs = OmegaConf.to_container(cfg.input) if OmegaConf.is_list(cfg.input) else cfg.input
    return run_prediction(
        translator,
        inputs,
        cfg.output_dir,
        direction=cfg.direction,
        round_trip=cfg.round_trip,
        grid=cfg.grid,
        html_index=cfg.html,
        overwrite=cfg.overwrite,
        batch_size=cfg.batch_size,
        ext=cfg.ext,
        on_bad_image=cfg.on_bad_image,
        progress=cfg.progress,
        parallel_images=cfg.parallel_images,
        video_stats=cfg.video_stats,
        video_stats_frames=cfg.video_stats_frames,
        video_crf=cfg.video_crf,
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    summary = run_command("predict", predict, cfg)
    if summary.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
