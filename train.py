"""Train a CycleGAN. With no arguments: the bundled demo on this machine's CPU or GPU.

python train.py                                            # demo
python train.py experiment=horse2zebra data.root=/data/h2z trainer=gpu
python train.py -m model.lambda_cycle=5,10                 # a sweep
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.cli import run_command
from cyclegan_lightning.config import register_resolvers
from cyclegan_lightning.training.run import run_training

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_command("train", run_training, cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
