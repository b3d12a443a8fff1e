"""Evaluate a checkpoint: FID/KID against real target images, cycle PSNR/SSIM, paired PSNR/SSIM; JSON + Markdown.

    python evaluate.py ckpt_path=outputs/demo/runs/<run>/checkpoints/last.ckpt data_root=data/demo
    python evaluate.py ckpt_path=... data_root=... fid.inception_weights=/models/weights-inception-2015-12-05-6726825d.pth
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.errors import CycleGANError
from cyclegan_lightning.evaluation import build_feature_extractor, evaluate, to_markdown, write_results
from cyclegan_lightning.inference import build_translator

log = logging.getLogger("evaluate")


def default_output_dir(ckpt_path: Path) -> Path:
    ckpt_path = Path(ckpt_path)
    run = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else Path("eval")
    return (run / "eval" if run.name != "eval" else run) / ckpt_path.stem


def run(cfg: DictConfig) -> dict:
    """Evaluate as ``cfg`` says, write metrics.json and metrics.md, return the result dict."""
    # the weights file is checked first: a missing one fails in a second, before any translation
    extractor = build_feature_extractor(cfg.fid.features, cfg.fid.inception_weights) if cfg.fid.enabled else None
    translator = build_translator(cfg.ckpt_path, cfg.translator)
    root = cfg.data_root
    test_a = cfg.test_a or (f"{root}/testA" if root else None)
    test_b = cfg.test_b or (f"{root}/testB" if root else None)
    result = evaluate(
        translator, test_a, test_b, cfg.direction, extractor, cfg.paired_a, cfg.paired_b, cfg.max_images,
        cfg.fid.kid_subset_size, cfg.progress,
    )  # fmt: skip
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(Path(cfg.ckpt_path))
    json_path, md_path = write_results(result, out)
    result["files"] = [str(json_path), str(md_path)]
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        result = run(cfg)
    except CycleGANError as exc:
        log.error("%s", exc)
        sys.exit(2)
    print(to_markdown(result))
    print("written:", ", ".join(result["files"]))


if __name__ == "__main__":
    main()
