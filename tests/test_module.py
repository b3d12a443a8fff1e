"""The training step does what the reference does: who owns which parameters, which network sees what, and when."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from probes import bare_trainer
from torch import nn
from torch.utils.data import DataLoader

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.models.schedulers import LinearDecay

GEN = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 1}
DISC = {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4, "n_layers": 2}


def tiny_model(**kwargs) -> CycleGAN:
    return CycleGAN(generator=GEN, discriminator=DISC, **kwargs)


def batches(n: int = 1, side: int = 16, batch_size: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = [
        {"a": torch.rand(3, side, side, generator=g) * 2 - 1, "b": torch.rand(3, side, side, generator=g) * 2 - 1}
        for _ in range(n)
    ]
    return DataLoader(data, batch_size=batch_size)


def fit(model: CycleGAN, epochs: int = 1, n_batches: int = 1, callbacks=()) -> L.Trainer:
    trainer = bare_trainer(max_epochs=epochs, callbacks=list(callbacks))
    trainer.fit(model, train_dataloaders=batches(n_batches))
    return trainer


def param_ids(*nets: nn.Module) -> set[int]:
    return {id(p) for net in nets for p in net.parameters()}


def test_each_optimizer_owns_exactly_its_networks_parameters():
    model = tiny_model()
    (opt_g, opt_d), _ = model.configure_optimizers()
    g_params = {id(p) for group in opt_g.param_groups for p in group["params"]}
    d_params = {id(p) for group in opt_d.param_groups for p in group["params"]}
    assert g_params == param_ids(model.gen_a2b, model.gen_b2a)
    assert d_params == param_ids(model.disc_a, model.disc_b)
    assert opt_g.defaults["betas"] == (0.5, 0.999) and opt_g.defaults["lr"] == 2e-4


def test_one_step_changes_all_four_networks():
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    fit(model)
    for name in ("gen_a2b", "gen_b2a", "disc_a", "disc_b"):
        changed = [k for k in before if k.startswith(name) and not torch.equal(before[k], model.state_dict()[k])]
        assert changed, f"{name} did not change"
    # after the step the discriminators are trainable again (frozen only during the generator step)
    assert all(p.requires_grad for p in model.disc_a.parameters())


def test_identity_loss_goes_through_the_generator_of_the_images_domain():
    model = tiny_model()
    model.gen_a2b = nn.Identity()  # a perfect identity mapping for B images fed to the A->B generator
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    losses = model.generator_losses(a, b, fake_a=a, fake_b=b, rec_a=a, rec_b=b)
    assert losses["idt_b"] == 0  # gen_a2b(real_b) == real_b
    assert losses["idt_a"] > 0  # gen_b2a(real_a) is a random network's output

    class Shift(nn.Module):
        def forward(self, x):
            return x + 0.25  # L1 to its input: 0.25

    # relative weight: identity = lambda_identity * lambda_cycle of the domain (reference semantics)
    model2 = tiny_model(lambda_cycle_a=4.0, lambda_identity=0.5)
    model2.gen_b2a = Shift()
    assert model2.generator_losses(a, b, a, b, a, b)["idt_a"].item() == pytest.approx(0.25 * 4.0 * 0.5)


def test_discriminators_see_detached_pooled_fakes_from_before_the_generator_step():
    model = tiny_model(pool_size=50)  # pool not full: query returns the new fakes themselves
    made, judged = {}, {}
    calls = {"b2a": 0}

    def record_fake_a(module, inputs, output):
        calls["b2a"] += 1
        if calls["b2a"] == 2:  # forward order: fake_b, rec_a = G_b2a(fake_b), fake_a = G_b2a(real_b), ...
            made["fake_a"] = output.detach().clone()

    def record_disc_a(module, inputs, output):
        judged.setdefault("inputs", []).append(inputs[0])

    model.gen_b2a.register_forward_hook(record_fake_a)
    model.disc_a.register_forward_hook(record_disc_a)
    fit(model)
    # disc_a calls: G step (fake_a), D step (real_a, then the pooled fake_a)
    d_fake = judged["inputs"][-1]
    assert not d_fake.requires_grad
    assert torch.equal(d_fake, made["fake_a"])
    real_b = next(iter(batches()))["b"]
    with torch.no_grad():
        assert not torch.allclose(model.gen_b2a(real_b), d_fake)  # the generator has moved on since
    assert len(model.pool_a) == 1 and len(model.pool_b) == 1


def lrs_per_epoch(model: CycleGAN, epochs: int) -> list[float]:
    seen = []

    class RecordLR(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            opt_g, opt_d = pl_module.optimizers()
            assert opt_g.param_groups[0]["lr"] == opt_d.param_groups[0]["lr"]
            seen.append(opt_g.param_groups[0]["lr"])

    fit(model, epochs=epochs, callbacks=[RecordLR()])
    return seen


def test_linear_lr_follows_reference_formula_at_first_middle_and_last_epoch():
    n, n_decay, lr0 = 3, 4, 2e-4
    seen = lrs_per_epoch(tiny_model(n_epochs=n, n_epochs_decay=n_decay, lr=lr0), n + n_decay)
    expected = [lr0 * (1 - max(0, e - n) / (n_decay + 1)) for e in range(1, n + n_decay + 1)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert seen[0] == lr0 and seen[n - 1] == lr0 and seen[-1] == pytest.approx(lr0 / (n_decay + 1))
    assert LinearDecay(100, 100)(199) == pytest.approx(1 / 101)  # epoch 200 of the paper's schedule


def test_step_and_cosine_policies():
    step = lrs_per_epoch(tiny_model(lr_policy="step", lr_step_epochs=2, lr_gamma=0.5, n_epochs=2, n_epochs_decay=2), 4)
    assert step == pytest.approx([2e-4, 2e-4, 1e-4, 1e-4])
    cos = lrs_per_epoch(tiny_model(lr_policy="cosine_full", n_epochs=2, n_epochs_decay=2), 4)
    assert cos[0] == pytest.approx(2e-4) and cos[2] == pytest.approx(1e-4) and cos == sorted(cos, reverse=True)
    ref_cos = lrs_per_epoch(tiny_model(lr_policy="cosine", n_epochs=2, n_epochs_decay=2), 4)
    assert ref_cos == pytest.approx([2e-4, 1e-4, 0.0, 1e-4], abs=1e-12)  # the reference's T_max = n_epochs


def test_validation_reports_cycle_error_and_never_touches_pools():
    model = tiny_model()
    pool_state = model.pool_a.generator.get_state()
    val = DataLoader([{"image": torch.rand(3, 18, 18) * 2 - 1} for _ in range(3)], batch_size=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    result = trainer.validate(model, dataloaders=[val, val])[0]
    assert set(result) >= {"val/cycle_a", "val/cycle_b", "val/cycle"}
    assert result["val/cycle"] == pytest.approx((result["val/cycle_a"] + result["val/cycle_b"]) / 2)
    with torch.no_grad():
        x = torch.stack([val.dataset[i]["image"] for i in range(3)])
        expected = (model(model(x, "a2b"), "b2a") - x).abs().mean().item()
    assert result["val/cycle_a"] == pytest.approx(expected, rel=1e-4)
    assert len(model.pool_a) == 0 and torch.equal(model.pool_a.generator.get_state(), pool_state)


@pytest.mark.parametrize("h,w", [(16, 16), (30, 33), (17, 9)])
def test_forward_returns_the_input_size_for_any_size(h, w):
    model = tiny_model().eval()
    x = torch.rand(2, 3, h, w) * 2 - 1
    for direction in ("a2b", "b2a"):
        assert model(x, direction).shape == x.shape
    unet = CycleGAN({"_target_": "cyclegan_lightning.networks.UnetGenerator", "num_downs": 7, "ngf": 2}, DISC).eval()
    assert unet(x, "a2b").shape == x.shape
    with pytest.raises(ValueError, match="direction"):
        model(x, "ab")


def test_wgangp_adds_a_gradient_penalty_to_the_discriminator_loss():
    model = tiny_model(gan_mode="wgangp", lambda_gp=10.0)
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    losses = model.discriminator_losses(a, b, torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    assert losses["gp_a"] > 0 and losses["gp_b"] > 0
    fit(tiny_model(gan_mode="wgangp"))  # and a full step runs


def test_one_and_three_channel_domains_and_identity_guard():
    model = tiny_model(channels_a=1, channels_b=3, lambda_identity=0.0)
    assert model(torch.rand(1, 1, 16, 16), "a2b").shape == (1, 3, 16, 16)
    assert model(torch.rand(1, 3, 16, 16), "b2a").shape == (1, 1, 16, 16)
    with pytest.raises(ConfigError, match="lambda_identity=0"):
        tiny_model(channels_a=1, channels_b=3)


def test_checkpoint_holds_plain_hparams_and_pools(tmp_path):
    model = tiny_model(lambda_cycle=7.0)
    trainer = fit(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # plain values only: no DictConfig, partial or module
    assert raw["hyper_parameters"]["lambda_cycle"] == 7.0
    assert len(raw["image_pools"]) == 1 and len(raw["image_pools"][0]["a"]["images"]) == 1  # one list entry per rank
    restored = CycleGAN.load_from_checkpoint(path)
    assert restored.lambda_a == 7.0
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in model.state_dict().items())
