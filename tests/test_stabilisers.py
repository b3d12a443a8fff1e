"""Stabilisers (docs/stabilisers.md): each flag does what it says, and only when set.

DiffAugment reaches every discriminator input, ADA steers p by the overfitting signal and keeps it in the
checkpoint, the EMA averages and is what inference uses, spectral norm bounds the discriminators, R1 penalises
the gradient on real images, resize-convolution upsampling has no checkerboard.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from probes import bare_trainer
from test_module import DISC, GEN, batches, fit, tiny_model
from torch import nn

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.inference import load_generators
from cyclegan_lightning.models.augment import DiscriminatorAugment, diff_augment
from cyclegan_lightning.models.losses import gradient_penalty, r1_penalty
from cyclegan_lightning.networks import (
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    init_weights,
)
from cyclegan_lightning.networks.generators import up_conv


# ---- DiffAugment ------------------------------------------------------------------------------------------------
class Draws:
    """Stands in for ``torch.rand`` / ``torch.randint`` during one call: hands out the prescribed values in order
    (reshaped to the requested size) and records the ranges ``randint`` was asked for."""

    def __init__(self, monkeypatch, *values):
        self.values, self.ranges = list(values), []
        monkeypatch.setattr(torch, "rand", self.rand)
        monkeypatch.setattr(torch, "randint", self.randint)

    def rand(self, *size, dtype=None, device=None, **_):
        return torch.as_tensor(self.values.pop(0), dtype=dtype or torch.float32).reshape(*size)

    def randint(self, low, high, size, device=None, **_):
        self.ranges.append((low, high))
        return torch.as_tensor(self.values.pop(0), dtype=torch.long).reshape(*size)


def test_diffaugment_color_follows_the_official_formulas(monkeypatch):
    """Brightness x + (r - 0.5), saturation (x - mean_C) * 2r + mean_C, contrast (x - mean_CHW) * (r + 0.5) +
    mean_CHW (official DiffAugment_pytorch.py), checked pixel by pixel on a non-flat batch with known draws."""
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r_bright, r_sat, r_con = [0.1, 0.8], [0.3, 0.9], [0.2, 0.7]
    Draws(monkeypatch, r_bright, r_sat, r_con)
    out = diff_augment(x, "color")
    monkeypatch.undo()
    expected = x.clone()
    for i in range(2):
        img = expected[i] + (r_bright[i] - 0.5)
        per_pixel = img.mean(0, keepdim=True)
        img = (img - per_pixel) * (2 * r_sat[i]) + per_pixel
        whole = img.mean()
        expected[i] = (img - whole) * (r_con[i] + 0.5) + whole
    assert torch.allclose(out, expected, atol=1e-6)


def test_diffaugment_translation_and_cutout_follow_the_official_formulas(monkeypatch):
    """Translation: out[h, w] = x[h + tx, w + ty], zero where that falls outside, shifts up to 1/8 of each side
    (rounded); cutout: one square of half the side, centred at a drawn offset, zeroed (clipped at the border)."""
    n, height, width = 3, 16, 24
    x = torch.arange(n * 2 * height * width, dtype=torch.float32).reshape(n, 2, height, width) + 1  # no zeros
    tx, ty = [2, -1, 0], [-3, 0, 2]
    draws = Draws(monkeypatch, tx, ty)
    out = diff_augment(x, "translation")
    assert draws.ranges == [(-2, 3), (-3, 4)]  # int(16 / 8 + 0.5), int(24 / 8 + 0.5)
    monkeypatch.undo()
    expected = torch.zeros_like(x)
    for i in range(n):
        for h in range(height):
            for w in range(width):
                if 0 <= h + tx[i] < height and 0 <= w + ty[i] < width:
                    expected[i, :, h, w] = x[i, :, h + tx[i], w + ty[i]]
    assert torch.equal(out, expected)

    ox, oy = [0, 8, 15], [23, 12, 3]
    draws = Draws(monkeypatch, ox, oy)
    out = diff_augment(x, "cutout")
    assert draws.ranges == [(0, height + 1), (0, width + 1)]  # even square sides: offsets up to the side itself
    monkeypatch.undo()
    expected = x.clone()
    for i in range(n):
        for h in range(ox[i] - 4, ox[i] + 4):  # 8 x 12: half of 16 x 24
            for w in range(oy[i] - 6, oy[i] + 6):
                if 0 <= h < height and 0 <= w < width:
                    expected[i, :, h, w] = 0
    assert torch.equal(out, expected)


def test_diffaugment_policy_names():
    with pytest.raises(ConfigError, match="model.diffaugment"):
        diff_augment(torch.zeros(1, 3, 4, 4), "color,flip")
    assert DiscriminatorAugment(["color", "cutout"]).policy == ("color", "cutout")  # Hydra's [color,cutout]


class Spy(nn.Module):
    """A discriminator that records its inputs."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        return x.mean(1, keepdim=True) * self.w


def test_diffaugment_reaches_every_discriminator_input_differentiably():
    model = tiny_model(diffaugment="cutout")
    model.disc_a, model.disc_b = Spy(), Spy()
    real = torch.ones(2, 3, 16, 16)
    fake = torch.full((2, 3, 16, 16), 0.5, requires_grad=True)
    losses = model.generator_losses(real, real, fake, fake, real, real)  # fakes judged in the generator step
    losses["gan_a2b"].backward()
    assert fake.grad is not None and (fake.grad != 0).any() and (fake.grad == 0).any()  # zero under the cutout
    model.discriminator_losses(real, real, fake, fake)  # real and pooled fakes in the discriminator step
    for spy in (model.disc_a, model.disc_b):
        assert len(spy.seen) == 3 and all((x == 0).any() for x in spy.seen)
    plain = tiny_model()  # off by default: the discriminators see the images themselves
    plain.disc_a, plain.disc_b = Spy(), Spy()
    plain.discriminator_losses(real, real, fake, fake)
    seen = plain.disc_a.seen
    assert len(seen) == 2 and torch.equal(seen[0], real) and torch.equal(seen[1], fake.detach())


# ---- ADA --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gan_mode", "score", "direction"), [("lsgan", 0.7, 1), ("lsgan", 0.3, -1), ("vanilla", 0.3, 1)]
)
def test_ada_moves_p_towards_the_overfitting_target(gan_mode, score, direction):
    ada = DiscriminatorAugment("color", gan_mode, target=0.6, interval=2, kimg=0.01)  # 10 images: p 0 -> 1
    ada.p.fill_(0.5)
    for _ in range(2):
        ada.observe(torch.full((2, 1, 4, 4), score))  # sign(D(real) - t) = direction everywhere: r_t = direction
        update = ada.step(n_images=2)
    assert update == {"p": pytest.approx(0.5 + direction * 4 / 10), "rt": direction}
    assert ada.step(2) is None  # only every `interval` steps


def test_ada_gate_and_probability_in_the_checkpoint(tmp_path):
    ada = DiscriminatorAugment("cutout", target=0.6)
    x = torch.ones(8, 1, 8, 8)
    assert torch.equal(ada(x), x)  # p starts at 0: nothing augmented
    ada.p.fill_(1.0)
    assert ((ada(x) == 0).flatten(1).any(1)).all()  # p = 1: every image
    ada.p.fill_(0.25)
    torch.manual_seed(0)
    augmented = (ada(torch.ones(400, 1, 8, 8)) == 0).flatten(1).any(1).float().mean()
    assert 0.18 < float(augmented) < 0.32  # p = 0.25: about a quarter of the images, each whole or not at all
    model = tiny_model(diffaugment="color,translation,cutout", ada_target=0.6, ada_interval=1, ada_kimg=0.004)
    model.augment.p.fill_(0.5)  # each image moves p by 1/4: after the 2 batches it is 0 or 1, whatever D says
    trainer = fit(model, n_batches=2)
    p = float(model.augment.p)
    assert p in (0.0, 1.0) and int(model.augment.calls) == 2
    model.augment.p.fill_(p := 0.375)  # a value no fresh model has
    model.augment.signs.fill_(3.0)  # a half-collected interval
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    restored = CycleGAN.load_from_checkpoint(path)
    assert float(restored.augment.p) == p and torch.equal(restored.augment.signs, model.augment.signs)


def test_ada_needs_diffaugment():
    with pytest.raises(ConfigError, match="model.diffaugment"):
        tiny_model(ada_target=0.6)


# ---- EMA --------------------------------------------------------------------------------------------------------
def test_ema_averages_the_generators_and_is_what_inference_uses(tmp_path):
    model = tiny_model(ema_decay=0.5)
    initial = {k: v.clone() for k, v in model.gen_a2b.state_dict().items()}
    trainer = fit(model, n_batches=2)  # first update copies, second averages: ema = 0.5 * w1 + 0.5 * w2
    ema = model.gen_ema["a2b"].module.state_dict()
    live = model.gen_a2b.state_dict()
    key = "model.1.weight"
    assert not torch.equal(ema[key], live[key]) and not torch.equal(ema[key], initial[key])
    assert int(model.gen_ema["a2b"].n_averaged) == 2
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model.gen_ema["a2b"].module(x))  # validation and sample grids
        model.train()
        assert torch.equal(model(x), model.gen_a2b(x))  # training uses the live generator
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_generators(path)  # prediction, evaluation and export
    assert loaded.info["weights"] == "ema" and "weights=ema" in loaded.describe()
    assert torch.equal(loaded.generators["a2b"].state_dict()[key], ema[key])
    raw = load_generators(path, use_ema=False)
    assert "weights" not in raw.info and torch.equal(raw.generators["a2b"].state_dict()[key], live[key])
    restored = CycleGAN.load_from_checkpoint(path)
    assert torch.equal(restored.gen_ema["b2a"].module.state_dict()[key], model.gen_ema["b2a"].module.state_dict()[key])


def test_ema_update_is_the_exponential_average():
    model = tiny_model(ema_decay=0.9)
    gens = {"a2b": model.gen_a2b, "b2a": model.gen_b2a}
    model.gen_ema.step(gens)  # copy
    first = model.gen_a2b.model[1].weight.detach().clone()
    with torch.no_grad():
        model.gen_a2b.model[1].weight.add_(1.0)
    model.gen_ema.step(gens)
    assert torch.allclose(model.gen_ema["a2b"].module.model[1].weight, first + 0.1, atol=1e-6)


# ---- spectral norm ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [NLayerDiscriminator, PixelDiscriminator])
def test_spectral_norm_bounds_every_conv_and_survives_a_state_dict_round_trip(cls):
    torch.manual_seed(0)
    disc = init_weights(cls(input_nc=3, ndf=4, spectral_norm=True))  # as the model builds it
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    # init_weights initialised the unnormalised weights (normal, std 0.02), not a throwaway computed tensor
    assert all(abs(float(m.parametrizations.weight.original.std()) - 0.02) < 0.01 for m in convs)
    for _ in range(30):  # power iterations run in training forwards
        disc(torch.randn(1, 3, 32, 32))
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.05)
    twin = cls(input_nc=3, ndf=4, spectral_norm=True)
    twin.load_state_dict(disc.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(twin.eval()(x), disc.eval()(x))
    assert not any("parametrizations" in k for k in cls(input_nc=3, ndf=4).state_dict())  # off: reference keys


def test_spectral_norm_model_resumes_from_its_checkpoint(tmp_path):
    model = CycleGAN(generator=GEN, discriminator=DISC | {"spectral_norm": True})
    trainer = fit(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    restored = CycleGAN.load_from_checkpoint(path)
    state = restored.state_dict()
    assert any(k.endswith("parametrizations.weight.0._u") for k in state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    bare_trainer(max_epochs=2).fit(restored, train_dataloaders=batches(1), ckpt_path=path)  # resume runs


# ---- R1 ---------------------------------------------------------------------------------------------------------
class Linear(nn.Module):
    """D(x) = <w, x> per image: its input gradient is w, whatever x."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_r1_is_the_squared_input_gradient_on_real_images_and_trains_d():
    d = Linear((3, 4, 4))
    real = torch.rand(2, 3, 4, 4)
    r1 = r1_penalty(d, real)
    assert float(r1) == pytest.approx(float(d.w.pow(2).sum()), rel=1e-5)
    r1.backward()  # double backward reaches D: d/dw ||w||^2 = 2w
    assert torch.allclose(d.w.grad, 2 * d.w.detach(), atol=1e-5)
    torch.manual_seed(0)  # the shared gradient helper still gives WGAN-GP: (||w|| - 1)^2
    assert float(gradient_penalty(d, real, torch.rand_like(real))) == pytest.approx(
        (float(d.w.detach().norm()) - 1) ** 2, rel=1e-5
    )


def test_lambda_r1_adds_half_gamma_times_r1_to_each_discriminator_loss():
    torch.manual_seed(0)
    real, fake = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    plain, with_r1 = tiny_model(), tiny_model(lambda_r1=4.0)
    with_r1.load_state_dict(plain.state_dict())
    base, reg = plain.discriminator_losses(real, real, fake, fake), with_r1.discriminator_losses(real, real, fake, fake)
    assert "r1_a" not in base
    for name, disc in (("a", plain.disc_a), ("b", plain.disc_b)):
        expected = r1_penalty(disc, real)
        assert float(reg[f"r1_{name}"]) == pytest.approx(float(expected), rel=1e-5) and float(expected) > 0
        assert float(reg[name]) == pytest.approx(float(base[name]) + 2.0 * float(expected), rel=1e-5)


# ---- resize-convolution upsampling ------------------------------------------------------------------------------
def test_resize_convolution_has_no_checkerboard_where_the_transposed_conv_has_one():
    x = torch.ones(1, 2, 8, 8)
    outs = {}
    for kind in ("transpose", "resize"):
        layer = up_conv(2, 1, kind, bias=False, kernel_size=3, padding=1, output_padding=1)
        for m in layer.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.ones_(m.weight)
        outs[kind] = layer(x)[0, 0, 2:-2, 2:-2]  # interior, away from the borders
        assert layer(x).shape == (1, 1, 16, 16)
    assert outs["transpose"].unique().numel() > 1  # uneven overlap of the stride-2 kernel: a checkerboard
    assert outs["resize"].unique().numel() == 1  # a flat input stays flat


@pytest.mark.parametrize(
    ("cls", "kwargs"), [(ResnetGenerator, {"ngf": 4, "n_blocks": 1}), (UnetGenerator, {"ngf": 4, "num_downs": 5})]
)
def test_generators_upsample_by_resize_convolution_when_asked(cls, kwargs):
    default, resize = cls(**kwargs), cls(upsample="resize", **kwargs)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in default.modules())  # the reference's layers by default
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resize.modules())
    assert sum(isinstance(m, nn.Upsample) for m in resize.modules()) == (2 if cls is ResnetGenerator else 5)
    x = torch.rand(1, 3, 32, 32)
    assert resize(x).shape == default(x).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="upsample"):
        cls(upsample="pixelshuffle", **kwargs)


# ---- the real config, end to end --------------------------------------------------------------------------------
def test_every_flag_from_the_config_trains_logs_and_predicts_with_the_ema(train_cfg):
    from cyclegan_lightning.training import run_training

    cfg = train_cfg(
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "model.diffaugment='color,translation,cutout'",
        "model.ada_target=0.6",
        "model.ada_interval=1",
        "model.ema_decay=0.9",
        "model.lambda_r1=1.0",
        "model.discriminator.spectral_norm=true",
        "model.generator.upsample=resize",
    )
    run_training(cfg)
    run = Path(cfg.paths.output_dir)
    logged = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/ada/p", "train/ada/rt", "train/d/r1_a", "train/d/r1_b"} <= set(logged)
    loaded = load_generators(run / "checkpoints" / "last.ckpt")
    assert loaded.info["weights"] == "ema" and loaded.info["upsample"] == "resize"
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in loaded.generators["a2b"].modules())
