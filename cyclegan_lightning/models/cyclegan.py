"""CycleGAN (Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks",
ICCV 2017) as a LightningModule with manual optimization.

Networks are named by what they do; the table maps them to the paper and the reference implementation, whose
checkpoints users already have:

=============  ===========================  =====  =========
here           role                         paper  reference
=============  ===========================  =====  =========
``gen_a2b``    translates A to B            G      netG_A
``gen_b2a``    translates B to A            F      netG_B
``disc_a``     judges real vs fake A        D_X    netD_B
``disc_b``     judges real vs fake B        D_Y    netD_A
``proj_a2b``   PatchNCE head on gen_a2b     -      (CUT netF; only with ``lambda_nce > 0``)
``proj_b2a``   PatchNCE head on gen_b2a     -      (CUT netF; only with ``lambda_nce > 0``)
=============  ===========================  =====  =========

Logged losses keep the same naming; the reference's printed names for the same quantities differ, and swap A/B
for the identity and discriminator terms:

===================  ========================================  =========
logged here          what it is                                reference
===================  ========================================  =========
``train/g/gan_a2b``  D_b(gen_a2b(A)) judged real               ``G_A``
``train/g/gan_b2a``  D_a(gen_b2a(B)) judged real               ``G_B``
``train/g/cycle_a``  |gen_b2a(gen_a2b(A)) - A| (weighted)      ``cycle_A``
``train/g/cycle_b``  |gen_a2b(gen_b2a(B)) - B| (weighted)      ``cycle_B``
``train/g/idt_a``    |gen_b2a(A) - A| (weighted)               ``idt_B``
``train/g/idt_b``    |gen_a2b(B) - B| (weighted)               ``idt_A``
``train/g/nce_a``    PatchNCE(A, gen_a2b(A)) (lambda_nce > 0)  (CUT's ``NCE``)
``train/g/nce_b``    PatchNCE(B, gen_b2a(B)) (lambda_nce > 0)  (CUT's ``NCE``)
``train/d/a``        disc_a on real A vs pooled fake A         ``D_B``
``train/d/b``        disc_b on real B vs pooled fake B         ``D_A``
===================  ========================================  =========

One training step follows the reference exactly: one forward of both cycles, the generator step with the
discriminators frozen, then the discriminator step on pooled, detached fakes made before the generator step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.models.base import UnpairedTranslationModel
from cyclegan_lightning.models.image_pool import ImagePool
from cyclegan_lightning.models.losses import GANLoss, PatchNCELoss
from cyclegan_lightning.models.patchnce import build_projection_head, patchnce_between, seeded_generator
from cyclegan_lightning.networks import set_activation_checkpointing


class CycleGAN(UnpairedTranslationModel):
    """Two generators, two discriminators, adversarial + cycle + identity losses, image pools, per-epoch LR decay.

    ``generator`` and ``discriminator`` are plain dicts with a ``_target_`` (a network class) and its keyword
    arguments, as in ``conf/model/generator/*.yaml``; channel counts come from ``channels_a``/``channels_b``.
    Every hyperparameter is a plain value, so checkpoints load with torch's default ``weights_only=True``.
    Validation, checkpoints, accumulation and the non-finite policy come from ``UnpairedTranslationModel``.
    """

    network_names = ("gen_a2b", "gen_b2a", "disc_a", "disc_b")

    def __init__(
        self,
        generator: dict,  # {_target_: network class, **kwargs}, built twice (A->B, B->A)
        discriminator: dict,  # {_target_: network class, **kwargs}, built twice (judges A, judges B)
        channels_a: int = 3,  # image channels of domain A (1 or 3)
        channels_b: int = 3,
        gan_mode: str = "lsgan",  # lsgan | vanilla | wgangp
        lambda_cycle: float = 10.0,  # weight of both cycle losses unless set per domain below
        lambda_cycle_a: float | None = None,  # weight of A -> B -> A (reference lambda_A)
        lambda_cycle_b: float | None = None,  # weight of B -> A -> B (reference lambda_B)
        lambda_identity: float = 0.5,  # relative: identity weight = lambda_identity * lambda_cycle of that domain
        lambda_gp: float = 10.0,  # gradient-penalty weight, used with gan_mode=wgangp only
        lambda_nce: float = 0.0,  # >0: add CUT's PatchNCE(input, translation) of each direction (ResNet generators)
        nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16),  # generator layers PatchNCE taps (with lambda_nce > 0)
        num_patches: int = 256,  # patch positions PatchNCE samples per layer
        pool_size: int = 50,  # fakes stored per domain for the discriminators; 0 disables
        lr: float = 2e-4,  # initial learning rate of both optimizers
        betas: tuple[float, float] = (0.5, 0.999),  # Adam betas
        lr_policy: str = "linear",  # linear | step | cosine | cosine_full, stepped once per epoch (schedulers.py)
        n_epochs: int = 100,  # epochs at the initial LR (linear policy)
        n_epochs_decay: int = 100,  # epochs of linear decay to zero that follow
        lr_step_epochs: int = 50,  # step policy: multiply by lr_gamma every this many epochs
        lr_gamma: float = 0.1,
        init_type: str = "normal",  # normal | xavier | kaiming | orthogonal
        init_gain: float = 0.02,
        gradient_clip_val: float | None = None,  # clip each optimizer's gradient norm (after AMP unscaling)
        nonfinite_policy: str = "stop",  # stop | skip: a NaN/Inf loss, checked before backward, stops or skips the step
        # ---- speed levers (measured in docs/performance.md; none changes the saved weights' keys) ----
        channels_last: bool = False,  # NHWC weights/activations: pays on tensor-core GPUs, slower on CPUs
        compile_generators: bool = False,  # torch.compile both generators in place (gen.compile(), keys unchanged)
        adam_impl: str | None = None,  # None (torch's choice) | foreach | fused: Adam implementation of both optimizers
        identity_init_steps: int = 0,  # before a fresh fit, train both generators this many steps to copy their input
        # ---- memory levers (docs/scaling.md, "High resolution"); neither changes the saved weights' keys ----
        activation_checkpointing: bool = False,  # recompute the generators' residual blocks / U-Net levels in backward
        accumulate_grad_batches: int = 1,  # each optimizer steps once per this many batches, on their summed grads
        # ---- stabilisers (docs/stabilisers.md), all off by default: models/stabilisers.py ----
        diffaugment: str | list[str] | None = None,  # e.g. "color,translation,cutout": DiffAugment of D's inputs
        ada_target: float | None = None,  # e.g. 0.6: adapt DiffAugment's probability to this overfitting signal
        ada_interval: int = 4,  # ADA: adjust the probability every this many steps
        ada_kimg: float = 100.0,  # ADA: thousands of images for the probability to go from 0 to 1
        ema_decay: float | None = None,  # e.g. 0.999: EMA of the generators, used for validation/prediction/export
        lambda_r1: float = 0.0,  # R1 penalty weight (gamma) on real images; the loss adds gamma/2 * E|grad D|^2
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # run_training logs the whole resolved config once
        self.check_common_hparams()
        if lambda_identity > 0 and channels_a != channels_b:
            raise ConfigError(
                f"identity loss needs equal channels in both domains (got A={channels_a}, B={channels_b}); "
                "set model.lambda_identity=0"
            )
        self.gen_a2b = self.build_network(generator, input_nc=channels_a, output_nc=channels_b)
        self.gen_b2a = self.build_network(generator, input_nc=channels_b, output_nc=channels_a)
        self.disc_a = self.build_network(discriminator, input_nc=channels_a)
        self.disc_b = self.build_network(discriminator, input_nc=channels_b)
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_a = lambda_cycle if lambda_cycle_a is None else lambda_cycle_a
        self.lambda_b = lambda_cycle if lambda_cycle_b is None else lambda_cycle_b
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        if lambda_nce > 0:  # built last, so the default (off) draws nothing and builds the same networks
            self.proj_a2b, self.proj_b2a = (
                build_projection_head(gen, nce_layers, num_patches, 256, init_type, init_gain)
                for gen in (self.gen_a2b, self.gen_b2a)
            )
            self.network_names = (*self.network_names, "proj_a2b", "proj_b2a")
            self.patchnce = PatchNCELoss()
            self.patch_rng = seeded_generator()
        self.init_validation_metrics(channels_a, channels_b)
        if activation_checkpointing:
            for gen in (self.gen_a2b, self.gen_b2a):
                set_activation_checkpointing(gen)
        self.init_stabilisers()

    @property
    def image_pools(self) -> dict[str, ImagePool]:
        return {"a": self.pool_a, "b": self.pool_b}

    @property
    def random_generators(self) -> dict[str, torch.Generator]:
        return {"patch": self.patch_rng} if self.hparams.get("lambda_nce", 0) > 0 else {}

    # ---- losses (pure: no optimizer, unit-testable) --------------------------------------------------------------
    def generator_losses(self, real_a, real_b, fake_a, fake_b, rec_a, rec_b) -> dict[str, torch.Tensor]:
        """Adversarial, cycle and identity losses of both generators, and their weighted sum ``total``."""
        losses = {
            "gan_a2b": self.gan_loss(self.judge(self.disc_b, fake_b), True),
            "gan_b2a": self.gan_loss(self.judge(self.disc_a, fake_a), True),
            "cycle_a": F.l1_loss(rec_a, real_a) * self.lambda_a,
            "cycle_b": F.l1_loss(rec_b, real_b) * self.lambda_b,
        }
        lambda_idt = self.hparams.lambda_identity
        if lambda_idt > 0:  # a generator fed an image of its own output domain should leave it unchanged
            losses["idt_a"] = F.l1_loss(self.gen_b2a(real_a), real_a) * self.lambda_a * lambda_idt
            losses["idt_b"] = F.l1_loss(self.gen_a2b(real_b), real_b) * self.lambda_b * lambda_idt
        lambda_nce = self.hparams.get("lambda_nce", 0)
        if lambda_nce > 0:  # CUT's PatchNCE: each translated patch keeps the content of its input patch
            layers = self.hparams.nce_layers
            for name, gen, head, real, fake in (
                ("nce_a", self.gen_a2b, self.proj_a2b, real_a, fake_b),
                ("nce_b", self.gen_b2a, self.proj_b2a, real_b, fake_a),
            ):
                losses[name] = patchnce_between(
                    gen, head, self.patchnce, real, fake, layers, self.patch_rng, lambda_nce
                )
        losses["total"] = sum(losses.values())
        return losses

    def discriminator_losses(self, real_a, real_b, fake_a, fake_b) -> dict[str, torch.Tensor]:
        """Each discriminator on real vs detached fake images (``discriminator_loss``), and their sum ``total``."""
        losses = {}
        self.discriminator_loss("a", self.disc_a, real_a, fake_a, losses)
        self.discriminator_loss("b", self.disc_b, real_b, fake_b, losses)
        losses["total"] = losses["a"] + losses["b"]
        return losses

    # ---- training ------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        """The reference's ``optimize_parameters``: forward both cycles; G phase with D frozen; D phase on pooled
        fakes made before the G step (``optimize``: accumulation, AMP, the non-finite policy, EMA/ADA)."""
        opt_g, opt_d = self.optimizers()
        real_a, real_b = batch["a"], batch["b"]
        fake_b = self.gen_a2b(real_a)  # G(A)
        rec_a = self.gen_b2a(fake_b)  # F(G(A))
        fake_a = self.gen_b2a(real_b)  # F(B)
        rec_b = self.gen_a2b(fake_a)  # G(F(B))

        with self.frozen(self.disc_a, self.disc_b):  # gradients flow through D to G, but D is not updated
            g_losses = self.generator_losses(real_a, real_b, fake_a, fake_b, rec_a, rec_b)
            if not self.optimize("g", g_losses, opt_g):
                return  # non-finite, skipped: the fakes feeding the discriminators are suspect too

        d_losses = self.discriminator_losses(real_a, real_b, self.pool_a.query(fake_a), self.pool_b.query(fake_b))
        d_ok = self.optimize("d", d_losses, opt_d)
        self.log_losses(g_losses, d_losses if d_ok else {}, real_a.shape[0])  # a NaN would poison the epoch means

    def configure_optimizers(self):
        heads = (self.proj_a2b, self.proj_b2a) if self.hparams.get("lambda_nce", 0) > 0 else ()
        opt_g = self.adam(self.gen_a2b, self.gen_b2a, *heads)  # Adam is per parameter: as if F had its own
        opt_d = self.adam(self.disc_a, self.disc_b)
        return [opt_g, opt_d], self.build_schedulers((opt_g, opt_d))
