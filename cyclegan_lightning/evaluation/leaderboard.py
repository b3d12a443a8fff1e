"""Rank the runs of a sweep: evaluate each run's best (or last) checkpoint and write a table with its overrides,
the epochs of its best and last checkpoints, and the training-time quality metric at both (from its CSV log)."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cyclegan_lightning.errors import CycleGANError
from cyclegan_lightning.evaluation.evaluate import evaluate
from cyclegan_lightning.evaluation.report import LOWER_IS_BETTER, METRIC_ORDER, fmt, write_text_atomic
from cyclegan_lightning.runs import (
    checkpoint_epochs,
    data_folders,
    find_runs,
    pick_checkpoint,
    read_metric_by_epoch,
    read_overrides,
    run_test_folders,
)

log = logging.getLogger(__name__)
RUN_COLUMNS = ("best_epoch", "last_epoch")  # then <quality_metric>@best, <quality_metric>@last


@dataclass
class RunEntry:
    run_dir: Path
    overrides: list[str]
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # flattened: "a2b/fid", "val/swd@best", "best_epoch"
    error: str | None = None


def training_metrics(run: Path, quality_metric: str = "val/swd") -> dict[str, float]:
    """Epochs (1-based) of the best and last checkpoints, and ``quality_metric`` logged at each, where known."""
    out: dict[str, float] = {}
    by_epoch = read_metric_by_epoch(run, quality_metric)
    for which, epoch in checkpoint_epochs(run).items():
        out[f"{which}_epoch"] = epoch
        if epoch in by_epoch:
            out[f"{quality_metric}@{which}"] = by_epoch[epoch]
    return out


def build_leaderboard(
    runs: list[str | Path],
    translator_factory,  # path -> Translator
    extractor=None,
    checkpoint: str = "best",
    data_root: str | None = None,  # one test set for every run; default: each run's own
    rank_by: str = "auto",  # auto | <direction>/<metric> | <metric> (mean over directions) | val/swd@best ...
    max_images: int | None = None,
    kid_subset_size: int = 1000,
    progress: bool = True,
    quality_metric: str = "val/swd",  # read from each run's csv/metrics.csv at its best and last epochs
    perceptual=None,  # LPIPS (evaluation.lpips), or None
) -> tuple[list[RunEntry], str]:
    """Evaluate every run; returns the entries sorted best first (failed runs last) and the ranking key."""
    entries = []
    for run in find_runs(runs):
        entry = RunEntry(run, read_overrides(run))
        try:
            entry.metrics = training_metrics(run, quality_metric)
            entry.checkpoint = pick_checkpoint(run, checkpoint)
            folders = data_folders(data_root) if data_root else run_test_folders(run)
            result = evaluate(
                translator_factory(entry.checkpoint),
                folders["test_a"],
                folders["test_b"],
                "both",
                extractor,
                folders["paired_a"],
                folders["paired_b"],
                max_images=max_images,
                kid_subset_size=kid_subset_size,
                progress=progress,
                perceptual=perceptual,
            )
            entry.metrics |= {f"{d}/{k}": v for d, vals in result["metrics"].items() for k, v in vals.items()}
        except CycleGANError as exc:
            entry.error = str(exc)
            log.warning("run %s: %s", run, exc)
        entries.append(entry)
    return rank(entries, rank_by, f"{quality_metric}@{checkpoint}")


def rank(entries: list[RunEntry], rank_by: str = "auto", quality: str = "val/swd@best") -> tuple[list[RunEntry], str]:
    """Entries best first by ``rank_by`` (``auto``: ``quality`` where logged, else FID, else cycle PSNR); runs
    without that value after them, failed runs last. Returns them and the key used."""
    key = _rank_key(entries, rank_by, quality)
    return sorted(entries, key=lambda e: _score(e, key)), key


def lower_is_better(key: str) -> bool:
    """``val/swd@best`` -> swd, ``a2b/fid`` -> fid, ``cycle_psnr`` -> cycle_psnr; then LOWER_IS_BETTER."""
    return key.split("@")[0].split("/")[-1] in LOWER_IS_BETTER


def _score(entry: RunEntry, key: str) -> tuple[int, float]:
    """Sort key: runs with the value first (best first), then runs without it, then failed runs."""
    if entry.error:
        return (2, 0.0)
    v = _value(entry, key)
    if v is None:
        return (1, 0.0)
    return (0, v if lower_is_better(key) else -v)


def _value(entry: RunEntry, key: str) -> float | None:
    if key in entry.metrics:
        return entry.metrics[key]
    if "/" in key:
        return None
    vals = [v for k, v in entry.metrics.items() if "@" not in k and k.split("/")[-1] == key]
    return sum(vals) / len(vals) if vals else None


def _rank_key(entries: list[RunEntry], rank_by: str, quality: str) -> str:
    """``auto``: the training-time quality metric where runs logged it, else FID, else cycle PSNR."""
    if rank_by != "auto":
        return rank_by
    have = {k for e in entries for k in e.metrics} | {k.split("/")[-1] for e in entries for k in e.metrics}
    return next((k for k in (quality, "fid") if k in have), "cycle_psnr")


def _columns(entries: list[RunEntry]) -> list[str]:
    keys = {k for e in entries for k in e.metrics if not k.endswith("n_images")}
    order = {m: i for i, m in enumerate(RUN_COLUMNS + ("@",) + METRIC_ORDER)}

    def rank(k: str):
        return (order["@"], k) if "@" in k else (order.get(k.split("/")[-1], 99), k)

    return sorted(keys, key=rank)


def to_markdown(entries: list[RunEntry], key: str, notes: list[str] | None = None) -> str:
    cols = _columns(entries)
    better = "lower" if lower_is_better(key) else "higher"
    common = set.intersection(*(set(e.overrides) for e in entries)) if len(entries) > 1 else set()
    lines = [f"Ranked by {key} ({better} is better). Epochs are 1-based, as in the sample grids' names."]
    lines += notes or []
    if common:  # show what differs; what all runs share is listed once
        lines.append("Overrides common to all runs: " + " ".join(f"`{o}`" for o in entries[0].overrides if o in common))
    lines += ["", "| rank | run | overrides | " + " | ".join(cols) + " | checkpoint |", "|---" * (len(cols) + 4) + "|"]
    for i, e in enumerate(entries, 1):
        over = " ".join(f"`{o}`" for o in e.overrides if o not in common) or "(defaults)"
        if e.error:
            lines.append(
                f"| - | {e.run_dir.name} | {over} | " + " | ".join("" for _ in cols) + f" | error: {e.error} |"
            )
            continue
        ckpt = e.checkpoint.name if e.checkpoint else ""
        lines.append(
            f"| {i} | {e.run_dir.name} | {over} | " + " | ".join(fmt(e.metrics.get(c)) for c in cols) + f" | {ckpt} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(entries: list[RunEntry], key: str) -> str:
    cols = _columns(entries)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "run_dir", "overrides", *cols, "checkpoint", "error"])
    for i, e in enumerate(entries, 1):
        writer.writerow(
            [
                "" if e.error else i,
                str(e.run_dir),
                " ".join(e.overrides),
                *[e.metrics.get(c, "") for c in cols],
                str(e.checkpoint or ""),
                e.error or "",
            ]
        )
    return buf.getvalue()


def write_leaderboard(
    entries: list[RunEntry], key: str, output_dir: str | Path, notes: list[str] | None = None
) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    md, csv_path = output_dir / "leaderboard.md", output_dir / "leaderboard.csv"
    write_text_atomic(md, to_markdown(entries, key, notes))
    write_text_atomic(csv_path, to_csv(entries, key))
    return md, csv_path
