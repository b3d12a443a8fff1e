"""Evaluate checkpoints: FID/KID against real target images, cycle PSNR/SSIM, paired PSNR/SSIM; JSON + Markdown.

python evaluate.py ckpt_path=outputs/demo/runs/<run>                 # its best and last checkpoints, own test set
python evaluate.py ckpt_path=outputs/demo/runs/<run>/checkpoints/last.ckpt data_root=data/demo
python evaluate.py ckpt_path=latest_net_G_A.pth test_a=photos test_b=paintings fid.enabled=false
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.checkpoints.pretrained_folder import is_pretrained_folder
from cyclegan_lightning.cli import output_dir_for, run_command
from cyclegan_lightning.evaluation import fid_extractor, to_markdown, write_results
from cyclegan_lightning.evaluation.evaluate import evaluate
from cyclegan_lightning.evaluation.lpips import lpips_metric
from cyclegan_lightning.inference import build_translator
from cyclegan_lightning.runs import data_folders, pick_checkpoint, run_of, run_test_folders

log = logging.getLogger("evaluate")


def checkpoints_to_evaluate(ckpt_path: str | Path) -> dict[str, Path]:
    """A run folder (or its ``checkpoints/``): its best and last checkpoints (one, when they are the same file);
    a file or a model folder (export.py format=hf): that, named by its stem."""
    path = Path(ckpt_path)
    if not path.is_dir() or is_pretrained_folder(path):
        return {path.stem: path}
    run = run_of(path)
    if run is None:
        return {path.stem: path}  # the loader says what is wrong with a folder
    picked = {which: pick_checkpoint(run, which) for which in ("best", "last")}
    return picked if picked["best"] != picked["last"] else {"last": picked["last"]}


def run(cfg: DictConfig) -> dict:
    """Evaluate as ``cfg`` says, write metrics.json and metrics.md, return the report."""
    ckpts = checkpoints_to_evaluate(cfg.ckpt_path)
    run_dir = run_of(cfg.ckpt_path)
    if cfg.data_root or cfg.test_a or cfg.test_b or run_dir is None:
        folders = data_folders(cfg.data_root, cfg.test_a, cfg.test_b, cfg.paired_a, cfg.paired_b)
    else:  # the run's own test set (and its ground truth, where there is one)
        folders = run_test_folders(run_dir)
        folders |= {k: cfg[k] for k in ("paired_a", "paired_b") if cfg[k]}
    translators = {which: build_translator(path, cfg.translator) for which, path in ckpts.items()}  # bad files first
    extractor, why = fid_extractor(cfg.fid.enabled, cfg.fid.features, cfg.fid.inception_weights, cfg.fid.download)
    if why and cfg.fid.enabled == "auto":
        log.warning("FID/KID not computed (the report below says why); evaluating the other metrics")
    perceptual, lpips_why = lpips_metric(cfg.lpips.enabled, cfg.lpips.net, cfg.lpips.weights, cfg.lpips.download)
    if lpips_why and cfg.lpips.enabled == "auto":
        log.warning("LPIPS not computed: %s", lpips_why)
    results = []
    for which, translator in translators.items():
        result = evaluate(
            translator,
            folders["test_a"],
            folders["test_b"],
            cfg.direction,
            extractor,
            folders["paired_a"],
            folders["paired_b"],
            cfg.max_images,
            cfg.fid.kid_subset_size,
            cfg.progress,
            perceptual,
        )
        results.append({"which": which, **result})
    report = {
        "checkpoints": results,
        "fid_missing": why if cfg.fid.enabled == "auto" else None,
        "lpips_missing": lpips_why if cfg.lpips.enabled == "auto" else None,
    }
    if cfg.output_dir:
        out = Path(cfg.output_dir)
    elif len(ckpts) > 1:
        out = run_dir / "eval"
    else:
        out = output_dir_for(next(iter(ckpts.values())), "eval")
    report["files"] = [str(p) for p in write_results(report, out)]
    return report


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    report = run_command("evaluate", run, cfg)
    print(to_markdown(report))
    print("written:", ", ".join(report["files"]))


if __name__ == "__main__":
    main()
