"""Mixed precision under manual optimization: autocast really runs, steps go through the LightningOptimizer
(AMP's scaler included), and model.gradient_clip_val clips the *unscaled* gradients (pitfall 5)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict
from probes import GradProbe

from cyclegan_lightning import hardware
from cyclegan_lightning.training.run import run_training

CLIP = 1e-3  # far below the real gradient norms, so every step is clipped to exactly this norm
PROBE = ["+callbacks.probe._target_=probes.GradProbe", f"model.gradient_clip_val={CLIP}", "trainer.max_epochs=1"]


def _check_clipped_unscaled(probe: GradProbe) -> None:
    assert probe.step_norms, "no optimizer step ran"
    # clipping scaled gradients (before unscaling) would leave norms of CLIP / scale, e.g. 1.5e-8 at scale 65536
    for norm in probe.step_norms:
        assert math.isclose(norm, CLIP, rel_tol=1e-2), probe.step_norms


def test_bf16_mixed_on_cpu_trains_and_clips(train_cfg, tmp_path: Path, monkeypatch, caplog):
    """Forced on a CPU simulated without native bf16 (trainer=bf16 would pick fp32 there): it trains, warning once."""
    cfg = train_cfg("trainer.precision=bf16-mixed", *PROBE)
    monkeypatch.setenv(hardware.ENV_OVERRIDE, "0")
    monkeypatch.setattr(hardware, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=hardware.__name__):
        metrics = run_training(cfg)
    assert sum("EMULATED" in r.getMessage() for r in caplog.records) == 1
    probe = GradProbe.last
    assert torch.bfloat16 in probe.output_dtypes  # autocast ran
    _check_clipped_unscaled(probe)
    assert len(probe.step_norms) == 2 * 2  # 2 batches x (G step + D step)
    assert math.isfinite(metrics["val/cycle"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in state["state_dict"].items() if v.is_floating_point())


def test_fp16_with_grad_scaler_clips_unscaled_gradients(train_cfg):
    """The GPU preset's 16-mixed path (dynamic loss scaling) run on CPU: Lightning's string precision would fall
    back to bf16 on CPU, so the MixedPrecision plugin with a CPU GradScaler is given explicitly."""
    cfg = train_cfg(*PROBE)
    with open_dict(cfg):
        cfg.trainer.precision = None
        cfg.trainer.plugins.append(
            OmegaConf.create(
                {
                    "_target_": "lightning.pytorch.plugins.MixedPrecision",
                    "precision": "16-mixed",
                    "device": "cpu",
                    "scaler": {"_target_": "torch.amp.GradScaler", "device": "cpu", "init_scale": 1024.0},
                }
            )
        )
    run_training(cfg)
    probe = GradProbe.last
    assert torch.float16 in probe.output_dtypes
    assert probe.scales and all(s > 1 for s in probe.scales)  # loss scaling was active
    _check_clipped_unscaled(probe)


def test_gpu_precision_presets_compose(train_cfg):
    fp16 = train_cfg("trainer=fp16").trainer
    assert (fp16.accelerator, fp16.precision) == ("cpu", "16-mixed")  # TINY forces cpu; the preset says gpu
    assert OmegaConf.load(Path(__file__).parents[1] / "conf/trainer/fp16.yaml").accelerator == "gpu"
    for preset in ("fp16", "bf16", "ddp"):
        assert "gradient_clip_val" not in train_cfg(f"trainer={preset}").trainer  # raises under manual optimization
