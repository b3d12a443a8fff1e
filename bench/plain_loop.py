"""The yardstick: one CycleGAN training iteration in plain PyTorch, with the reference semantics.

Not a second implementation for users (train with ``train.py``); the benches time it against the Lightning module
to show what the Lightning structure costs. It uses the project's networks, losses and image pool, and nothing
from Lightning: forward both cycles once, generator step with the discriminators frozen (identity + adversarial
+ cycle losses, one Adam over both generators), then the discriminator step on pooled fakes made before the
generator step (one Adam over both discriminators). LR scheduling is per epoch and irrelevant to step time.
"""

from __future__ import annotations

import contextlib
import itertools

import hydra
import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_lightning.models.image_pool import ImagePool
from cyclegan_lightning.models.losses import GANLoss
from cyclegan_lightning.networks import init_weights


class PlainCycleGAN:
    """G_A/G_B/D_A/D_B as plain modules, two Adams, two pools; ``step(real_a, real_b)`` is one iteration."""

    def __init__(
        self,
        model_cfg: dict,
        precision: str = "32-true",
        adam_impl: str | None = None,
        channels_last: bool = False,
        compile_generators: bool = False,
    ):
        def build(spec, **kw):
            return init_weights(hydra.utils.instantiate(spec, **kw), model_cfg["init_type"], model_cfg["init_gain"])

        ca, cb = model_cfg["channels_a"], model_cfg["channels_b"]
        self.gen_a2b = build(model_cfg["generator"], input_nc=ca, output_nc=cb)
        self.gen_b2a = build(model_cfg["generator"], input_nc=cb, output_nc=ca)
        self.disc_a = build(model_cfg["discriminator"], input_nc=ca)
        self.disc_b = build(model_cfg["discriminator"], input_nc=cb)
        self.nets = nn.ModuleDict(
            {"gen_a2b": self.gen_a2b, "gen_b2a": self.gen_b2a, "disc_a": self.disc_a, "disc_b": self.disc_b}
        )
        if channels_last:
            self.nets.to(memory_format=torch.channels_last)
        if compile_generators:
            self.gen_a2b.compile()
            self.gen_b2a.compile()
        self.gan_loss = GANLoss(model_cfg["gan_mode"])
        lam = model_cfg["lambda_cycle"]
        self.lambda_a = lam if model_cfg.get("lambda_cycle_a") is None else model_cfg["lambda_cycle_a"]
        self.lambda_b = lam if model_cfg.get("lambda_cycle_b") is None else model_cfg["lambda_cycle_b"]
        self.lambda_idt = model_cfg["lambda_identity"]
        self.pool_a, self.pool_b = ImagePool(model_cfg["pool_size"], 0), ImagePool(model_cfg["pool_size"], 1)
        kw = {"lr": model_cfg["lr"], "betas": tuple(model_cfg["betas"])}
        if adam_impl:
            kw[adam_impl] = True
        self.opt_g = torch.optim.Adam(itertools.chain(self.gen_a2b.parameters(), self.gen_b2a.parameters()), **kw)
        self.opt_d = torch.optim.Adam(itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()), **kw)
        self.precision = precision

    def to(self, device: str) -> PlainCycleGAN:
        self.nets.to(device)  # before the first step: Adam's state is created lazily on the parameters' device
        return self

    def autocast(self, device_type: str):
        if self.precision.startswith("bf16"):
            return torch.autocast(device_type, dtype=torch.bfloat16)
        if self.precision.startswith("16"):
            return torch.autocast(device_type, dtype=torch.float16)
        return contextlib.nullcontext()

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast(real_a.device.type):  # as Lightning's precision plugin: autocast around the whole step
            fake_b = self.gen_a2b(real_a)
            rec_a = self.gen_b2a(fake_b)
            fake_a = self.gen_b2a(real_b)
            rec_b = self.gen_a2b(fake_a)

            for p in itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()):
                p.requires_grad_(False)
            loss_g = (
                self.gan_loss(self.disc_b(fake_b), True)
                + self.gan_loss(self.disc_a(fake_a), True)
                + F.l1_loss(rec_a, real_a) * self.lambda_a
                + F.l1_loss(rec_b, real_b) * self.lambda_b
            )
            if self.lambda_idt > 0:
                loss_g = loss_g + F.l1_loss(self.gen_b2a(real_a), real_a) * self.lambda_a * self.lambda_idt
                loss_g = loss_g + F.l1_loss(self.gen_a2b(real_b), real_b) * self.lambda_b * self.lambda_idt
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            for p in itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()):
                p.requires_grad_(True)

            loss_d = 0.0
            for disc, real, fake in (
                (self.disc_a, real_a, self.pool_a.query(fake_a)),
                (self.disc_b, real_b, self.pool_b.query(fake_b)),
            ):
                fake = fake.detach()
                loss_d = loss_d + 0.5 * (self.gan_loss(disc(real), True) + self.gan_loss(disc(fake), False))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        return {"g": loss_g.detach(), "d": loss_d.detach()}
