"""Draw a run's curves (losses, LR, quality, paired PSNR, health) from its CSV log into a PNG.

python plot.py run=outputs/demo/runs/<time>              # -> <run>/plots/curves.png
python plot.py run=outputs/demo/runs/<time> out=curves.png
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.cli import run_command
from cyclegan_lightning.evaluation.plotting import plot_metrics
from cyclegan_lightning.run_layout import RunLayout

log = logging.getLogger("plot")


def plot(cfg: DictConfig) -> Path:
    run = RunLayout(cfg.run)
    return plot_metrics(run.metrics_csv, cfg.out or run.curves, title=run.root.name)


@hydra.main(version_base="1.3", config_path="conf", config_name="plot")
def main(cfg: DictConfig) -> None:
    log.info("curves: %s", run_command("plot", plot, cfg))


if __name__ == "__main__":
    main()
