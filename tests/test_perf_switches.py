"""The speed levers (model.channels_last, model.compile_generators, model.adam_impl, perf=cpu|gpu) change how the
model runs, never what it computes or how its checkpoints look. Timings live in bench/, not here."""

from __future__ import annotations

import hydra
import pytest
import torch

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.errors import ConfigError

GEN = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 8, "n_blocks": 1}
DISC = {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 8}


def tiny(**levers) -> CycleGAN:
    torch.manual_seed(0)
    return CycleGAN(GEN, DISC, **levers)


def test_compile_in_place_keeps_state_dict_keys():
    plain = tiny()
    compiled = tiny(compile_generators=True)
    compiled.setup("fit")
    assert compiled.gen_a2b._compiled_call_impl is not None and compiled.gen_b2a._compiled_call_impl is not None
    keys = list(compiled.state_dict())
    assert keys == list(plain.state_dict())
    assert not any("_orig_mod" in k for k in keys)
    compiled.load_state_dict(plain.state_dict())  # checkpoints written either way load either way


def test_channels_last_output_matches_default():
    ref = tiny()
    fast = tiny(channels_last=True)
    fast.load_state_dict(ref.state_dict())
    fast.setup("fit")
    conv = fast.gen_a2b.model[1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(fast(x, "a2b"), ref(x, "a2b"), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fast.disc_b(x), ref.disc_b(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", [None, "foreach", "fused"])
def test_adam_impl_reaches_both_optimizers(impl):
    (opt_g, opt_d), _ = tiny(adam_impl=impl).configure_optimizers()
    for opt in (opt_g, opt_d):
        assert isinstance(opt, torch.optim.Adam)
        if impl is None:
            assert not opt.defaults.get("fused") and opt.defaults.get("foreach") is None
        else:
            assert opt.defaults[impl] is True


def test_unknown_adam_impl_is_a_config_error():
    with pytest.raises(ConfigError, match="adam_impl"):
        tiny(adam_impl="turbo")


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_preset_reaches_the_objects_it_configures(train_cfg, simulate_cpu, native_bf16):
    """perf=cpu: bf16 only where the (simulated) CPU has it, fused Adam in the optimizers."""
    simulate_cpu(native_bf16)
    cfg = train_cfg("perf=cpu")
    trainer = hydra.utils.instantiate(cfg.trainer)
    assert trainer.precision == ("bf16-mixed" if native_bf16 else "32-true")
    model = hydra.utils.instantiate(cfg.model)
    assert not model.hparams.channels_last and not model.hparams.compile_generators
    assert all(opt.defaults["fused"] is True for opt in model.configure_optimizers()[0])


def test_gpu_preset_turns_on_the_gpu_levers(train_cfg):
    cfg = train_cfg("perf=gpu", "trainer.accelerator=cpu")  # composed on this CPU machine: only the values count
    model = hydra.utils.instantiate(cfg.model)
    assert model.hparams.channels_last and model.hparams.compile_generators
    assert all(opt.defaults["fused"] is True for opt in model.configure_optimizers()[0])
    assert hydra.utils.instantiate(cfg.trainer).strategy.root_device.type == "cpu" and cfg.trainer.benchmark is True


def test_fit_with_levers_saves_reference_keys(train_cfg, tmp_path):
    """A short real run with channels_last + fused Adam + bf16: trains, and the checkpoint keys are the usual ones."""
    from cyclegan_lightning.training.run import run_training

    cfg = train_cfg(
        "model.channels_last=true",
        "model.adam_impl=fused",
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
    )
    run_training(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "gen_a2b.model.1.weight" in ckpt["state_dict"]
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["adam_impl"] == "fused"
