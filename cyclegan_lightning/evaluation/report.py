"""Reports of evaluate.py and leaderboard.py: the metric order and sense, number formatting, the Markdown table of
an evaluation and the atomic JSON + Markdown files."""

from __future__ import annotations

import json
from pathlib import Path

from cyclegan_lightning.checkpoints.atomic import atomic_open

# the rest (PSNR, SSIM) is higher-is-better
LOWER_IS_BETTER = ("fid", "kid_mean", "kid_std", "swd", "cycle", "cycle_lpips", "paired_lpips")
METRIC_ORDER = (
    "fid",
    "kid_mean",
    "kid_std",
    "cycle_psnr",
    "cycle_ssim",
    "cycle_lpips",
    "paired_psnr",
    "paired_ssim",
    "paired_lpips",
    "n_images",
)


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def to_markdown(report: dict) -> str:
    """One table for the checkpoints of ``report`` (``{"checkpoints": [result, ...], "fid_missing": why}``)."""
    results = report["checkpoints"]
    cols = [m for m in METRIC_ORDER if any(m in v for r in results for v in r["metrics"].values())]
    lines = [f"FID/KID not computed: {report['fid_missing']}", ""] if report.get("fid_missing") else []
    lines += [f"LPIPS not computed: {report['lpips_missing']}", ""] if report.get("lpips_missing") else []
    features = {r["features"] for r in results if r["features"]}
    if features:
        lines += [f"FID/KID features: {', '.join(sorted(features))}", ""]
    lines += ["| checkpoint | epoch | direction | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for r in results:
        name = r.get("which") or Path(r["checkpoint"]).name
        for d, vals in r["metrics"].items():
            lines.append(f"| {name} | {fmt(r['epoch'])} | {d} | " + " | ".join(fmt(vals.get(c)) for c in cols) + " |")
    lines += ["", "Checkpoints: " + ", ".join(f"`{r['checkpoint']}`" for r in results)]
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_results(report: dict, output_dir: str | Path, name: str = "metrics") -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    json_path, md_path = output_dir / f"{name}.json", output_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(md_path, to_markdown(report))
    return json_path, md_path
