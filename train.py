"""Train a CycleGAN. With no arguments: the bundled demo on this machine's CPU or GPU.

python train.py                                            # demo
python train.py experiment=horse2zebra data.root=/data/h2z trainer=gpu
python train.py -m model.lambda_cycle=5,10                 # a sweep
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.config import register_resolvers
from cyclegan_lightning.errors import CycleGANError
from cyclegan_lightning.training.run import is_multirun, run_training

log = logging.getLogger("train")
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run_training(cfg)
    except CycleGANError as exc:  # a problem the user can fix: say what, without a traceback
        log.error("%s", exc)
        if is_multirun():
            raise  # Hydra records this job as failed and the sweep goes on (Optuna: max_failure_rate)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
