"""Paired PSNR/SSIM against ground truth, for data whose translations are known (the bundled demo).

Unpaired data has no right answer, but a dataset built with a known transform does. Next to its ``testA/`` and
``testB/`` folders it holds ``truthB/<name of a testA file>`` (what A->B should give) and ``truthA/<name of a
testB file>`` (what B->A should give); ``cyclegan_lightning.data.demo`` writes them. Wherever such files exist,
:class:`PairedMetrics` logs at every validation, per direction:

- ``val/paired_psnr_a2b``, ``val/paired_ssim_a2b``: the translation against the truth;
- ``val/paired_psnr_identity_a2b``, ``val/paired_ssim_identity_a2b``: the untouched input against the truth,
  the baseline a translation must beat (doing nothing scores this);

and says both once more in the log at the end of training. Without truth files it does nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer

from cyclegan_lightning.data.images import load_image
from cyclegan_lightning.directions import DIRECTIONS, LEAVING
from cyclegan_lightning.image_range import to_unit
from cyclegan_lightning.metrics.paired import psnr, ssim

log = logging.getLogger(__name__)


def truth_path(test_file: str | Path) -> Path | None:
    """``root/testA/x.png`` -> ``root/truthB/x.png`` (and testB -> truthA); None for files not under testA/testB."""
    test_file = Path(test_file)
    other = {"testA": "truthB", "testB": "truthA"}.get(test_file.parent.name)
    return test_file.parent.parent / other / test_file.name if other else None


class PairedMetrics(Callback):
    """Score both directions against ground-truth folders at each validation (see the module docstring)."""

    def __init__(self, max_images: int = 64):
        self.max_images = max_images  # per direction: the first this many validation images that have a truth
        self.pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # direction -> (inputs, truths)
        self.last: dict[str, float] = {}

    def _load_pairs(self, trainer: Trainer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Validation inputs and their truths, both through the validation transform (so they stay aligned)."""
        if self.pairs is None:
            self.pairs = {}
            for domain, direction in LEAVING.items():
                dataset = trainer.datamodule.val_sets[domain]
                reader = dataset.reader
                inputs, truths = [], []
                for index, file in enumerate(reader.files):
                    truth = truth_path(file)
                    if truth is None or not truth.is_file():
                        continue
                    inputs.append(dataset[index]["image"])
                    truths.append(reader.transform(load_image(truth, reader.channels).image))
                    if len(inputs) == self.max_images:
                        break
                if inputs:
                    self.pairs[direction] = (torch.stack(inputs), torch.stack(truths))
            if self.pairs:
                log.info(
                    "paired metrics against ground truth: %s",
                    ", ".join(f"{d} {p[0].shape[0]} images" for d, p in self.pairs.items()),
                )
        return self.pairs

    @torch.no_grad()
    def compute(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """``{"paired_psnr_a2b": ..., "paired_psnr_identity_a2b": ..., ...}`` means over the images."""
        scores: dict[str, float] = {}
        directions = getattr(pl_module, "generators", None) or DIRECTIONS  # CUT: a2b only
        for direction, (inputs, truths) in self._load_pairs(trainer).items():
            if direction not in directions:
                continue
            fakes = pl_module(inputs.to(pl_module.device), direction).float().cpu()
            for name, images in (("", fakes), ("identity_", inputs)):
                pairs = [(to_unit(x), to_unit(t)) for x, t in zip(images, truths)]
                scores[f"paired_psnr_{name}{direction}"] = sum(psnr(x, t) for x, t in pairs) / len(pairs)
                scores[f"paired_ssim_{name}{direction}"] = sum(ssim(x, t) for x, t in pairs) / len(pairs)
        return scores

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        scores = self.compute(trainer, pl_module)
        if scores:  # the same on every rank (every rank scores all images): no sync needed
            pl_module.log_dict({f"val/{k}": v for k, v in scores.items()})
            self.last = scores | {"epoch": trainer.current_epoch + 1}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.last or not trainer.is_global_zero:
            return
        s = self.last
        parts = [
            f"{d.replace('2', '->').upper()} PSNR {s[f'paired_psnr_{d}']:.2f} dB (identity "
            f"{s[f'paired_psnr_identity_{d}']:.2f}),"
            f" SSIM {s[f'paired_ssim_{d}']:.3f} (identity {s[f'paired_ssim_identity_{d}']:.3f})"
            for d in DIRECTIONS
            if f"paired_psnr_{d}" in s
        ]
        log.info("paired metrics against ground truth after epoch %d: %s", s["epoch"], "; ".join(parts))
