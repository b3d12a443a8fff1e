"""Draw a run's curves (losses, LR, quality, paired PSNR, health) from its CSV log into a PNG.

python plot.py run=outputs/demo/runs/<time>              # -> <run>/plots/curves.png
python plot.py run=outputs/demo/runs/<time> out=curves.png
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.errors import CycleGANError
from cyclegan_lightning.evaluation.plotting import plot_metrics

log = logging.getLogger("plot")


@hydra.main(version_base="1.3", config_path="conf", config_name="plot")
def main(cfg: DictConfig) -> None:
    run = Path(cfg.run)
    try:
        path = plot_metrics(run / "csv" / "metrics.csv", cfg.out or run / "plots" / "curves.png", title=run.name)
    except CycleGANError as exc:
        log.error("%s", exc)
        sys.exit(2)
    log.info("curves: %s", path)


if __name__ == "__main__":
    main()
