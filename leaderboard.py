"""Rank the runs of a sweep (or any run folders) by their metrics, with each run's overrides: Markdown + CSV.

python train.py -m model.lambda_cycle=5,10
python leaderboard.py runs=[outputs/demo/multiruns/<time>]
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from cyclegan_lightning.cli import run_command
from cyclegan_lightning.evaluation import fid_extractor
from cyclegan_lightning.evaluation.leaderboard import build_leaderboard, to_markdown, write_leaderboard
from cyclegan_lightning.evaluation.lpips import lpips_metric
from cyclegan_lightning.inference import build_translator
from cyclegan_lightning.runs import find_runs

log = logging.getLogger("leaderboard")


def run(cfg: DictConfig):
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    find_runs(runs)  # a wrong folder fails before FID/KID are set up
    extractor, why = fid_extractor(cfg.fid.enabled, cfg.fid.features, cfg.fid.inception_weights, cfg.fid.download)
    notes = [f"FID/KID columns are missing: {why}"] if why and cfg.fid.enabled == "auto" else []
    if notes:
        log.warning("FID/KID not computed (the table below says why); ranking by the other metrics")
    perceptual, lpips_why = lpips_metric(cfg.lpips.enabled, cfg.lpips.net, cfg.lpips.weights, cfg.lpips.download)
    if lpips_why and cfg.lpips.enabled == "auto":
        notes.append(f"LPIPS columns are missing: {lpips_why}")
    entries, key = build_leaderboard(
        runs,
        lambda ckpt: build_translator(ckpt, cfg.translator),
        extractor,
        cfg.checkpoint,
        cfg.data_root,
        cfg.rank_by,
        cfg.max_images,
        cfg.fid.kid_subset_size,
        cfg.progress,
        cfg.quality_metric,
        perceptual,
    )
    files = write_leaderboard(entries, key, cfg.output_dir or runs[0], notes)
    return entries, key, files, notes


@hydra.main(version_base="1.3", config_path="conf", config_name="leaderboard")
def main(cfg: DictConfig) -> None:
    entries, key, files, notes = run_command("leaderboard", run, cfg)
    print(to_markdown(entries, key, notes))
    print("written:", ", ".join(map(str, files)))


if __name__ == "__main__":
    main()
