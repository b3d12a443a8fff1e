"""Rank the runs of a sweep (or any run folders) by their metrics, with each run's overrides: Markdown + CSV.

    python train.py -m model.lambda_cycle=5,10
    python leaderboard.py runs=[outputs/demo/multiruns/<time>] fid.inception_weights=/models/weights-inception-...pth
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from cyclegan_lightning.errors import CycleGANError
from cyclegan_lightning.evaluation import build_feature_extractor
from cyclegan_lightning.evaluation.leaderboard import build_leaderboard, to_markdown, write_leaderboard
from cyclegan_lightning.inference import build_translator

log = logging.getLogger("leaderboard")


def run(cfg: DictConfig):
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    extractor = build_feature_extractor(cfg.fid.features, cfg.fid.inception_weights) if cfg.fid.enabled else None
    entries, key = build_leaderboard(
        runs, lambda ckpt: build_translator(ckpt, cfg.translator), extractor, cfg.checkpoint, cfg.data_root,
        cfg.rank_by, cfg.max_images, cfg.fid.kid_subset_size, cfg.progress,
    )  # fmt: skip
    files = write_leaderboard(entries, key, cfg.output_dir or runs[0])
    return entries, key, files


@hydra.main(version_base="1.3", config_path="conf", config_name="leaderboard")
def main(cfg: DictConfig) -> None:
    try:
        entries, key, files = run(cfg)
    except CycleGANError as exc:
        log.error("%s", exc)
        sys.exit(2)
    print(to_markdown(entries, key))
    print("written:", ", ".join(map(str, files)))


if __name__ == "__main__":
    main()
