"""Evaluate checkpoints on test folders: FID/KID of translations against real target images, cycle PSNR/SSIM,
and PSNR/SSIM against ground truth when paired folders are given. Results as JSON and a Markdown table."""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from cyclegan_lightning.data.images import find_images, load_image
from cyclegan_lightning.directions import ENDPOINTS, REVERSE
from cyclegan_lightning.errors import ConfigError, DataError
from cyclegan_lightning.evaluation.metrics import FidKid
from cyclegan_lightning.inference.translator import Translator
from cyclegan_lightning.metrics.paired import psnr, ssim
from cyclegan_lightning.runs import checkpoint_epoch

log = logging.getLogger(__name__)


def _images(folder: str | Path | None, what: str, limit: int | None) -> list[Path]:
    if folder is None:
        raise ConfigError(f"{what} is not set: give data_root=<folder with testA/ testB/> or {what}=<folder>")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist. Point data_root (or {what}) at your test images.")
    files = find_images(folder)
    if not files:
        raise DataError(f"{what} folder {folder} holds no images.")
    return files[:limit] if limit else files


def _paired_file(folder: Path, rel: Path) -> Path | None:
    for cand in [folder / rel, *sorted((folder / rel.parent).glob(rel.stem + ".*"))]:
        if cand.is_file():
            return cand
    return None


def evaluate_direction(
    translator: Translator,
    direction: str,
    sources: list[Path],
    source_root: Path,
    targets: list[Path],
    extractor: nn.Module | None,
    paired_root: Path | None = None,
    kid_subset_size: int = 1000,
    progress: bool = True,
    perceptual: nn.Module | None = None,  # LPIPS (evaluation.lpips): cycle and paired LPIPS beside PSNR/SSIM
) -> dict[str, float | int | None]:
    """Metrics of one direction; images are streamed one at a time, so any number and size fit in memory."""
    back = REVERSE[direction]
    has_back = back in translator.directions
    fidkid = FidKid(extractor, kid_subset_size, translator.device) if extractor is not None else None
    sums = {k: [] for k in ("cycle_psnr", "cycle_ssim", "cycle_lpips", "paired_psnr", "paired_ssim", "paired_lpips")}
    src, dst = ENDPOINTS[direction]
    src_ch, dst_ch = translator.loaded.channels[src], translator.loaded.channels[dst]
    if fidkid is not None:
        for path in tqdm(targets, desc=f"real {dst.upper()}", disable=not progress, leave=False):
            fidkid.update(load_image(path, dst_ch).image, real=True)
    for path in tqdm(sources, desc=f"{direction}", disable=not progress, leave=False):
        real = load_image(path, src_ch).image
        fake = translator.translate_tensor(real, direction)
        if fidkid is not None:
            fidkid.update(fake, real=False)
        if has_back:
            rec = translator.translate_tensor(fake, back)
            sums["cycle_psnr"].append(psnr(rec, real))
            sums["cycle_ssim"].append(ssim(rec, real))
            if perceptual is not None:
                sums["cycle_lpips"].append(float(perceptual(rec, real)))
        if paired_root is not None:
            gt_path = _paired_file(paired_root, path.relative_to(source_root))
            if gt_path is None:
                raise DataError(f"paired folder {paired_root} has no image named like {path.relative_to(source_root)}")
            gt = load_image(gt_path, dst_ch).image
            if gt.shape != fake.shape:
                raise DataError(
                    f"ground truth {gt_path} is {tuple(gt.shape[1:])}, the translation of {path} "
                    f"{tuple(fake.shape[1:])}: paired images must have equal sizes"
                )
            sums["paired_psnr"].append(psnr(fake, gt))
            sums["paired_ssim"].append(ssim(fake, gt))
            if perceptual is not None:
                sums["paired_lpips"].append(float(perceptual(fake, gt)))
    out: dict[str, float | int | None] = fidkid.compute() if fidkid is not None else {}
    for k, vals in sums.items():
        finite = [v for v in vals if math.isfinite(v)]
        out[k] = sum(finite) / len(finite) if finite else (float("inf") if vals else None)
    out["n_images"] = len(sources)
    return {k: v for k, v in out.items() if v is not None}


def evaluate(
    translator: Translator,
    test_a: str | Path | None,
    test_b: str | Path | None,
    direction: str = "both",
    extractor: nn.Module | None = None,  # None: no FID/KID
    paired_a: str | Path | None = None,  # ground-truth A images named like the test B images (for b2a)
    paired_b: str | Path | None = None,  # ground-truth B images named like the test A images (for a2b)
    max_images: int | None = None,
    kid_subset_size: int = 1000,
    progress: bool = True,
    perceptual: nn.Module | None = None,  # None: no LPIPS
) -> dict:
    """{"checkpoint", "epoch" (1-based; None for reference files), "features", "metrics": {direction: {metric:
    value}}, "seconds"}."""
    directions = list(translator.directions) if direction == "both" else [direction]
    start = time.perf_counter()
    folders = {"a": test_a, "b": test_b}
    paired = {"a": paired_a, "b": paired_b}
    metrics = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
        for d in directions:
            translator.generator(d)  # fails now if the checkpoint lacks it
            src, dst = d[0], d[2]
            sources = _images(folders[src], f"test_{src}", max_images)
            targets = _images(folders[dst], f"test_{dst}", max_images) if extractor is not None else []
            metrics[d] = evaluate_direction(
                translator,
                d,
                sources,
                Path(folders[src]),
                targets,
                extractor,
                Path(paired[dst]) if paired[dst] else None,
                kid_subset_size,
                progress,
                perceptual,
            )
    return {
        "checkpoint": str(translator.loaded.path),
        "epoch": checkpoint_epoch(translator.loaded.path),
        "features": None if extractor is None else type(extractor).__name__,
        "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 2),
    }
