"""A NaN/Inf in any loss: stop with a message naming the loss and the step (or skip the step), never apply it to
the weights and never let it reach a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from probes import bare_trainer

from cyclegan_lightning.errors import ConfigError, NumericalError
from cyclegan_lightning.models import phases
from cyclegan_lightning.models.cyclegan import CycleGAN
from cyclegan_lightning.training.run import run_training


def poison(monkeypatch, group: str, name: str, when, value: float = float("nan")) -> list:
    """Make loss ``name`` of ``group`` (g | d) non-finite whenever ``when(module, batch_idx)``; the total follows, as
    it would in a real blow-up. Returns a list that receives (module, finite-weights snapshot) at each poisoning."""
    hits: list = []
    orig = getattr(CycleGAN, f"{'generator' if group == 'g' else 'discriminator'}_losses")
    orig_step = CycleGAN.training_step

    def training_step(self, batch, batch_idx):
        self._test_batch_idx = batch_idx
        return orig_step(self, batch, batch_idx)

    def patched(self, *args):
        losses = orig(self, *args)
        if when(self, self._test_batch_idx):
            losses[name] = losses[name] * value
            losses["total"] = sum(v for k, v in losses.items() if k != "total" and not k.startswith("gp_"))
            hits.append((self, {k: v.detach().clone() for k, v in self.state_dict().items()}))
        return losses

    monkeypatch.setattr(CycleGAN, f"{'generator' if group == 'g' else 'discriminator'}_losses", patched)
    monkeypatch.setattr(CycleGAN, "training_step", training_step)
    return hits


def _finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("group,name,value", [("g", "cycle_a", float("nan")), ("d", "b", float("inf"))])
def test_nonfinite_loss_stops_names_loss_and_step_and_keeps_last_good_checkpoint(
    train_cfg, monkeypatch, group, name, value
):
    hits = poison(monkeypatch, group, name, lambda m, b: m.current_epoch == 1 and b == 1, value)
    cfg = train_cfg("trainer.max_epochs=3")
    with pytest.raises(NumericalError) as err:
        run_training(cfg)
    msg = str(err.value)
    # tiny data: 4 images, batch 2 -> 2 batches = 4 optimizer steps per epoch; epoch 1, batch 1 starts at step 6
    assert f"train/{group}/{name}=" in msg and "epoch 1, batch 1" in msg
    assert f"global step {6 if group == 'g' else 7}" in msg and "nonfinite_policy=skip" in msg
    model, before = hits[0]
    assert _finite(model.state_dict())  # nothing was applied
    torch.testing.assert_close(model.state_dict(), before)  # ... not even the D step after a good G step
    ckpt_path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0 and _finite(ckpt["state_dict"])  # the last good one, untouched


def test_skip_policy_skips_only_the_bad_step_and_finishes(train_cfg, monkeypatch):
    hits = poison(monkeypatch, "d", "a", lambda m, b: m.current_epoch == 0 and b == 0)
    cfg = train_cfg("trainer.max_epochs=1", "model.nonfinite_policy=skip")
    metrics = run_training(cfg)
    model, before = hits[0]
    assert len(hits) == 1 and metrics["train/nonfinite_skipped"] == 1
    assert model.trainer.global_step == 2 * 2 - 1  # 2 batches x (G + D) minus the skipped D step
    assert _finite(model.state_dict())
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert _finite(ckpt["state_dict"])


def test_skip_policy_still_stops_when_every_step_is_bad(train_cfg, monkeypatch):
    monkeypatch.setattr(phases, "MAX_CONSECUTIVE_NONFINITE", 2)
    hits = poison(monkeypatch, "g", "gan_a2b", lambda m, b: True)
    with pytest.raises(NumericalError, match=r"\(3 bad batches in a row\): train/g/gan_a2b=nan"):
        run_training(train_cfg("trainer.max_epochs=2", "model.nonfinite_policy=skip"))
    assert len(hits) == 3  # two batches skipped, the third (past the limit of 2) stops the run
    assert _finite(hits[-1][0].state_dict())


def test_policy_is_checked(train_cfg):
    import hydra

    with pytest.raises(Exception, match="nonfinite_policy must be one of") as err:
        hydra.utils.instantiate(train_cfg("model.nonfinite_policy=ignore").model)
    assert isinstance(err.value.__cause__ or err.value, ConfigError)


def test_poisoned_weights_are_never_written_over_a_good_checkpoint(train_cfg, tmp_path):
    import hydra

    cfg = train_cfg()
    model = hydra.utils.instantiate(cfg.model)
    dm = hydra.utils.instantiate(cfg.data)
    trainer = bare_trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    saved = good.read_bytes()
    with torch.no_grad():
        next(model.gen_b2a.parameters())[0].fill_(float("nan"))  # e.g. an overflow the loss check did not see
    with pytest.raises(NumericalError, match=r"gen_b2a\..*NaN/Inf.*refusing"):
        trainer.save_checkpoint(good)
    assert good.read_bytes() == saved
