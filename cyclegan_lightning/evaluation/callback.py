"""FID/KID during validation, every N epochs; off unless added (``callbacks=fid``).

A Callback rather than code in the LightningModule: the Inception network and its weights file are an optional,
heavy dependency of evaluation, not of training.
"""

from __future__ import annotations

import logging
import warnings

import torch
from lightning import Callback, LightningModule, Trainer

from cyclegan_lightning.directions import DIRECTIONS, ENDPOINTS
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.evaluation.metrics import FidKid, build_feature_extractor
from cyclegan_lightning.image_range import to_unit

log = logging.getLogger(__name__)


class FIDCallback(Callback):
    """Logs ``val/fid_<direction>`` and ``val/kid_<direction>`` on the validation images, for each direction the
    model translates (``a2b`` and ``b2a`` for CycleGAN, ``a2b`` for CUT).

    The weights file is checked (and downloaded on first use) in ``setup``, so a missing file stops the run before the
    first epoch, not after. A ``ModelCheckpoint`` monitoring ``val/fid_*`` needs the same ``every_n_epochs``: on
    other epochs the metric is not logged and Lightning raises.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,  # compute at the end of every N-th validation; 0 = off
        features: str = "inception",  # inception | random (plumbing checks only)
        inception_weights: str | None = None,  # default: the tool's cache, see evaluation.metrics
        max_images: int | None = 500,  # cap per domain (validation folders can be large); None: all
        kid_subset_size: int = 1000,
        download: bool = True,  # fetch the Inception weights into the cache on first use (see evaluation.metrics)
    ):
        self.every_n_epochs, self.features, self.inception_weights = every_n_epochs, features, inception_weights
        self.download = download
        self.max_images, self.kid_subset_size = max_images, kid_subset_size
        self.extractor = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.check_monitors(trainer)
        if self.every_n_epochs > 0 and self.extractor is None:
            self.extractor = build_feature_extractor(self.features, self.inception_weights, self.download)

    def check_monitors(self, trainer: Trainer) -> None:
        """A checkpoint monitoring FID/KID must save only on epochs that have it; else Lightning raises after the
        first epoch's training, so say it now, with the fix."""
        for ckpt in trainer.checkpoint_callbacks:
            monitor, every = getattr(ckpt, "monitor", None), getattr(ckpt, "_every_n_epochs", 0)
            if not monitor or not monitor.startswith(("val/fid_", "val/kid_")) or every < 1:
                continue
            if self.every_n_epochs <= 0 or every % self.every_n_epochs:
                raise ConfigError(
                    f"callbacks.model_checkpoint monitors {monitor}, logged every {self.every_n_epochs} epochs, but "
                    f"checkpoints every {every}: set "
                    f"callbacks.model_checkpoint.every_n_epochs={max(self.every_n_epochs, 1)} "
                    f"(or callbacks.fid.every_n_epochs={every})"
                )

    @torch.no_grad()
    def compute(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        sets = trainer.datamodule.val_sets
        out = {}
        was_training = pl_module.training
        pl_module.eval()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
            for direction in getattr(pl_module, "generators", None) or DIRECTIONS:  # CUT: a2b only
                src, dst = ENDPOINTS[direction]
                metric = FidKid(self.extractor.to(pl_module.device), self.kid_subset_size, pl_module.device)
                n_src = min(len(sets[src]), self.max_images or len(sets[src]))
                n_dst = min(len(sets[dst]), self.max_images or len(sets[dst]))
                for i in range(n_dst):
                    metric.update(to_unit(sets[dst][i]["image"]), real=True)
                for i in range(n_src):
                    real = sets[src][i]["image"][None].to(pl_module.device)
                    metric.update(to_unit(pl_module(real, direction)), real=False)
                values = metric.compute()
                if values["fid"] is not None:
                    out[f"val/fid_{direction}"] = values["fid"]
                    out[f"val/kid_{direction}"] = values["kid_mean"]
        pl_module.train(was_training)
        return out

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs <= 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        values = self.compute(trainer, pl_module)
        if values:
            pl_module.log_dict(values, sync_dist=False, rank_zero_only=False)
            log.info("epoch %d: %s", trainer.current_epoch + 1, ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
