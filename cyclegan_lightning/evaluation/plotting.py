"""Curves of a run from its CSV log (``<run>/csv/metrics.csv``) in one PNG: losses, learning rate, quality and
health metrics, paired PSNR/SSIM; whatever columns the run logged, one panel per family.

    python plot.py run=outputs/demo/runs/<time>            # writes <run>/plots/curves.png

:class:`cyclegan_lightning.training.callbacks.PlotCurves` draws the same picture at the end of every training run.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from cyclegan_lightning.errors import DataError

# (panel title, test on the column name), in panel order; the first match wins; anything else is grouped by prefix
FAMILIES = (
    ("generator losses", lambda c: c.startswith("train/g/")),
    ("discriminator accuracy", lambda c: c.startswith("train/d/acc")),
    ("discriminator losses", lambda c: c.startswith("train/d/")),
    ("learning rate", lambda c: c.startswith("train/lr")),
    ("translation quality (val/swd, lower is better)", lambda c: c.startswith("val/swd")),
    ("cycle L1 (val/cycle)", lambda c: c.startswith("val/cycle")),
    ("paired PSNR vs ground truth (dB; dashed: input unchanged)", lambda c: c.startswith("val/paired_psnr")),
    ("paired SSIM vs ground truth (dashed: input unchanged)", lambda c: c.startswith("val/paired_ssim")),
    ("health", lambda c: "/health/" in c or c.startswith("health/")),
)
NOT_PLOTTED = {"epoch", "step"}


def read_metrics(csv_path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(step, value), ...]}`` for every numeric column of a Lightning CSVLogger file."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"no metrics file {csv_path}; pass run=<a run folder of train.py with logger=csv (default)>")
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for column, text in row.items():
                if column in NOT_PLOTTED or column is None or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value) and math.isfinite(step):
                    series[column].append((step, value))
    return dict(series)


def group_columns(columns) -> dict[str, list[str]]:
    """Panel title -> its columns, in ``FAMILIES`` order, then the other prefixes alphabetically."""
    panels: dict[str, list[str]] = {title: [] for title, _ in FAMILIES}
    others: dict[str, list[str]] = defaultdict(list)
    for column in sorted(columns):
        for title, match in FAMILIES:
            if match(column):
                panels[title].append(column)
                break
        else:
            others[column.rsplit("/", 1)[0] if "/" in column else column].append(column)
    return {t: c for t, c in panels.items() if c} | dict(sorted(others.items()))


def plot_metrics(csv_path: str | os.PathLike, out_path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw every logged series of ``csv_path`` into ``out_path`` (a PNG, written atomically); returns it."""
    # a bare Figure on the Agg canvas: no pyplot, so no global backend switch (a notebook keeps its inline plots)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_metrics(csv_path)

    def known(c):
        return any(match(c) for _, match in FAMILIES)

    series = {c: v for c, v in series.items() if known(c) or any(y != 0 for _, y in v)}  # e.g. no skipped images
    panels = group_columns(series)
    if not panels:
        raise DataError(f"{csv_path} holds no numeric metrics yet; train for at least one epoch first")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.4 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (panel, columns) in zip(axes.flat, panels.items()):
        for column in columns:
            steps, values = zip(*series[column])
            style = "--" if "identity" in column else "-"
            many = len(values) > 30
            (line,) = ax.plot(
                steps,
                values,
                style,
                lw=0.8 if many else 1.5,
                alpha=0.35 if many else 1.0,
                marker=None if many else ".",
                label=column,
            )
            if many:  # noisy per-step losses: a running mean on top
                k = max(2, len(values) // 15)
                smooth = torch.tensor(values).unfold(0, k, 1).mean(1).tolist()
                ax.plot(steps[k - 1 :], smooth, style, color=line.get_color(), lw=1.6)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or str(Path(csv_path).parent.parent.name), fontsize=11)
    return save_figure(fig, out_path)


def save_figure(fig, out_path: str | os.PathLike) -> Path:
    """A matplotlib Figure (on the Agg canvas) as a PNG, written atomically; returns its path."""
    from cyclegan_lightning.checkpoints.atomic import save_png_atomic

    fig.tight_layout()
    fig.canvas.draw()
    rgba = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba()).copy())  # (H, W, 4) uint8
    out_path = Path(out_path)
    save_png_atomic(rgba[..., :3].permute(2, 0, 1).float() / 255, out_path)
    return out_path


def plot_comparison(
    lines: dict[str, list[tuple[float, float]]],
    out_path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    baseline: float | None = None,
    baseline_label: str = "input unchanged",
) -> Path:
    """One metric of several runs in one panel (``{label: [(x, y), ...]}``; runs whose label shares the part before
    `` seed`` share a colour), with an optional horizontal baseline; a PNG written atomically; returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not any(lines.values()):
        raise DataError(f"nothing to plot for {out_path}: no run logged {ylabel}")
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours: dict[str, str] = {}
    for label, points in lines.items():
        if not points:
            continue
        group = label.split(" seed")[0]
        xs, ys = zip(*points)
        (line,) = ax.plot(xs, ys, "-", marker=".", lw=1.3, color=colours.get(group), label=label)
        colours.setdefault(group, line.get_color())
    if baseline is not None:
        ax.axhline(baseline, ls="--", color="black", lw=1.0, label=baseline_label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, out_path)
