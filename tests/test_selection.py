"""The default checkpoint selection (conf/callbacks/default.yaml): ``checkpoints/best.ckpt`` is the epoch with the
lowest ``val/swd`` (not ``val/cycle``), overwritten in place when it improves; ``last.ckpt`` is the newest epoch,
for resuming, even when that epoch is not the best (Lightning 2.6's ``save_last`` would leave it at the best)."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import torch
from conftest import compose_train_cfg
from torch import nn

SWD = [0.5, 0.3, 0.4, 0.2, 0.25]  # best quality at epoch 3 (0-based), improving twice after the first
CYCLE = [0.1, 0.9, 0.9, 0.9, 0.9]  # an identity-like first epoch: best by val/cycle would be epoch 0


class ScriptedMetrics(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log_dict({"val/swd": SWD[self.current_epoch], "val/cycle": CYCLE[self.current_epoch]})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_best_ckpt_is_the_lowest_swd_epoch_overwritten_in_place(tmp_path: Path):
    cfg = compose_train_cfg([f"data.root={tmp_path}"], tmp_path / "run")
    checkpoint = hydra.utils.instantiate(cfg.callbacks.model_checkpoint)
    last = hydra.utils.instantiate(cfg.callbacks.last_checkpoint)
    data = torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=len(SWD),
        logger=False,
        callbacks=[checkpoint, last],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ScriptedMetrics(), train_dataloaders=data, val_dataloaders=data)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    assert torch.load(ckpts / "best.ckpt", weights_only=True)["epoch"] == 3
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == len(SWD) - 1  # the newest, not the best
    assert cfg.optimized_metric == checkpoint.monitor == "val/swd" and checkpoint.mode == "min"
