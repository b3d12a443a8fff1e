"""Callbacks of a CycleGAN run: a fixed grid of sample translations written each validation."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


def to_display(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (1 or 3 channels) -> float32 RGB in [0, 1], the range loggers and PNG writers expect."""
    images = ((images.detach().float() + 1) / 2).clamp(0, 1)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def save_png_atomic(image: torch.Tensor, path: Path) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", prefix=f".{path.stem}-", dir=path.parent)
    os.close(fd)
    try:
        save_image(image, tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SampleGrid(Callback):
    """Translate the same ``n_images`` validation images of each domain at every validation.

    Rows: real A, A->B, A->B->A, real B, B->A, B->A->B; one column per image. The grid is written to
    ``dirpath/epoch_XXXX.png`` (and ``latest.png``) and sent to every logger that takes images. The images are
    chosen once, so grids are comparable across epochs and across runs on the same data.
    """

    def __init__(self, dirpath: str, n_images: int = 4, every_n_epochs: int = 1):
        self.dirpath = Path(dirpath)
        self.n_images, self.every_n_epochs = n_images, every_n_epochs
        self.inputs: dict[str, torch.Tensor] | None = None

    def _fixed_inputs(self, trainer: Trainer) -> dict[str, torch.Tensor]:
        if self.inputs is None:
            sets = trainer.datamodule.val_sets
            self.inputs = {
                d: torch.stack([sets[d][i]["image"] for i in range(min(self.n_images, len(sets[d])))]) for d in "ab"
            }
        return self.inputs

    @torch.no_grad()
    def render(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        """The grid as a float (3, H, W) tensor in [0, 1]."""
        rows = []
        for there, back, domain in (("a2b", "b2a", "a"), ("b2a", "a2b", "b")):
            real = self._fixed_inputs(trainer)[domain].to(pl_module.device)
            fake = pl_module(real, there)
            rows += [to_display(real), to_display(fake), to_display(pl_module(fake, back))]
        n = max(r.shape[0] for r in rows)
        rows = [torch.cat([r, r.new_ones(n - r.shape[0], *r.shape[1:])]) if r.shape[0] < n else r for r in rows]
        return make_grid(torch.cat(rows).cpu(), nrow=n, padding=2, pad_value=1.0)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        grid = self.render(trainer, pl_module)  # every rank renders (safe with synced batch norm); rank 0 writes
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        path = self.dirpath / f"epoch_{epoch:04d}.png"
        try:
            save_png_atomic(grid, path)
            save_png_atomic(grid, self.dirpath / "latest.png")
        except OSError as exc:  # disk full, permissions: samples are not worth a multi-day run; say so and go on
            log.error(
                "could not write the sample grid %s (%s); earlier grids are intact. Training goes on; the next "
                "checkpoint write will stop it if the disk is really full.", path, exc.strerror or exc,
            )  # fmt: skip
            return
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B
                # uint8 HWC, rounded as save_image does: wandb.Image leaves float arrays unscaled (0..1 of 255)
                rgb = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                logger.log_image(key="samples", images=[rgb])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("samples", grid, global_step=epoch)
        log.info("sample grid: %s", path)
