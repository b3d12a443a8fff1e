"""Health signals: drift towards identity, discriminator accuracy, output diversity; and the once-only warning
(log, and W&B alert when a W&B logger is attached) when a run collapses or stops translating."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from photos import photo_crops
from probes import bare_trainer, stand_in
from torch.utils.data import DataLoader

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.evaluation.health import HealthMonitor
from cyclegan_lightning.metrics.health import DiversityRatio, discriminator_accuracy, translation_change

GEN = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 1}
DISC = {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4, "n_layers": 2}


def diversity(inputs: torch.Tensor, outputs: torch.Tensor, batch: int = 3) -> float:
    metric = DiversityRatio(inputs.shape[1], outputs.shape[1])
    for i in range(0, len(inputs), batch):
        metric.update(inputs[i : i + batch], outputs[i : i + batch])
    return float(metric.compute())


def test_diversity_is_one_for_identity_and_zero_for_collapse():
    x = photo_crops(8, 48, seed=1)
    assert diversity(x, x) == pytest.approx(1.0, rel=1e-6)
    assert diversity(x, 0.5 * x) == pytest.approx(0.5, rel=1e-6)  # spread, not mean: a contrast cut halves it
    assert diversity(x, torch.zeros_like(x)) == 0.0
    assert diversity(x, x[:1].expand_as(x)) < 1e-6  # one real-looking output for every input
    assert diversity(x, x, batch=8) == pytest.approx(diversity(x, x, batch=1))
    assert diversity(x[:, :1], x) > 0  # one-channel inputs, three-channel outputs


def test_change_measures_distance_from_the_input():
    x = photo_crops(4, 32, seed=2)
    assert translation_change(x, x).max() == 0
    torch.testing.assert_close(translation_change(x, x + 0.25), torch.full((4,), 0.25))
    torch.testing.assert_close(translation_change(x.mean(1, keepdim=True), x), torch.zeros(4), atol=1e-6, rtol=0)


def test_discriminator_accuracy_per_gan_mode_and_in_the_training_losses():
    pred = torch.tensor([0.9, 0.6, 0.4, 0.1])  # lsgan: targets 1 (real) / 0 (fake), decision at 0.5
    assert float(discriminator_accuracy(pred, True, "lsgan")) == 0.5
    assert float(discriminator_accuracy(pred - 0.5, False, "vanilla")) == 0.5  # logits, decision at 0
    assert float(discriminator_accuracy(torch.tensor([2.0, -1.0, -3.0]), False, "vanilla")) == pytest.approx(2 / 3)
    assert discriminator_accuracy(pred, True, "wgangp") is None
    model = CycleGAN(generator=GEN, discriminator=DISC)
    real, fake = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    losses = model.discriminator_losses(real, real, fake, fake)
    with torch.no_grad():
        pred_real = model.disc_a(real)
    assert float(losses["acc_real_a"]) == float((pred_real > 0.5).float().mean())
    assert float(losses["total"]) == pytest.approx(float(losses["a"] + losses["b"]))  # accuracies are not losses
    assert "acc_real_a" not in CycleGAN(generator=GEN, discriminator=DISC, gan_mode="wgangp").discriminator_losses(
        real, real, fake, fake
    )


def run_with(a2b: str, b2a: str, epochs: int, tmp_path, monitor: HealthMonitor) -> L.Trainer:
    """``epochs`` of training with stand-in generators, validating on photo crops after each."""
    model = CycleGAN(generator=GEN, discriminator=DISC)
    model.gen_a2b, model.gen_b2a = stand_in(a2b, "a2b"), stand_in(b2a, "b2a")
    photos = photo_crops(6, 32, seed=3)
    train = DataLoader([{"a": x, "b": x} for x in photos[:2]], batch_size=2)
    val = [DataLoader([{"image": x} for x in photos], batch_size=3) for _ in "ab"]
    trainer = bare_trainer(max_epochs=epochs, callbacks=[monitor], default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    return trainer


def test_collapse_and_identity_warn_once_each_after_warmup(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="cyclegan_lightning.evaluation.health")
    trainer = run_with("constant", "identity", epochs=3, tmp_path=tmp_path, monitor=HealthMonitor(warmup_epochs=1))
    metrics = trainer.callback_metrics
    assert float(metrics["val/health/diversity_a2b"]) == 0 and float(metrics["val/health/change_b2a"]) == 0
    assert float(metrics["val/health/diversity_b2a"]) == pytest.approx(1) and metrics["val/health/change_a2b"] > 0.1
    messages = [r.getMessage() for r in caplog.records]
    collapse = [m for m in messages if "mode collapse" in m]
    identity = [m for m in messages if "stopped translating" in m]
    assert len(collapse) == 1 and "a2b generator" in collapse[0] and "model.lr" in collapse[0]  # says what to change
    assert len(identity) == 1 and "b2a generator" in identity[0] and "lambda_identity" in identity[0]
    assert collapse[0].startswith("epoch 2:")  # not at epoch 1 (warm-up), then never again


def test_a_translating_run_raises_no_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="cyclegan_lightning.evaluation.health")
    run_with("truth", "truth", epochs=2, tmp_path=tmp_path, monitor=HealthMonitor(warmup_epochs=0))
    assert not [r for r in caplog.records if r.name == "cyclegan_lightning.evaluation.health"]


def test_warning_goes_to_wandb_alert_only_with_a_wandb_logger(monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    alerts = []

    class RecordingWandb(WandbLogger):  # a real WandbLogger subclass whose run only records alerts
        @property
        def experiment(self):
            return SimpleNamespace(alert=lambda **kw: alerts.append(kw))

    class NamedLikeWandb(CSVLogger):  # has the name, not the type: must not be sent an alert
        @property
        def experiment(self):
            raise AssertionError("not a W&B logger")

    NamedLikeWandb.__name__ = "WandbLogger"
    trainer = SimpleNamespace(
        sanity_checking=False,
        current_epoch=3,
        is_global_zero=True,
        callback_metrics={"val/health/diversity_a2b": torch.tensor(0.01), "val/health/change_a2b": torch.tensor(0.5)},
        loggers=[NamedLikeWandb("unused"), RecordingWandb()],
    )
    monitor = HealthMonitor()
    monitor.on_validation_end(trainer, None)
    monitor.on_validation_end(trainer, None)
    assert len(alerts) == 1 and "collapse" in alerts[0]["title"] and "model.lr" in alerts[0]["text"]
