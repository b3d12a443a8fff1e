"""CUT and FastCUT (Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation", ECCV 2020) as a
LightningModule with manual optimization, following the official code (taesungp/contrastive-unpaired-translation,
``models/cut_model.py``; docs/cut.md lists where ours differs).

One generator translates A to B; a PatchNCE loss keeps each output patch closer to the input patch at the same place
than to the other patches of that image, so no second generator and no cycle are needed. FastCUT is this class with
other settings (``conf/model/fastcut.yaml``): ``lambda_nce=10``, ``nce_idt=False``, ``flip_equivariance=True``.

=================  =================================================  ==========  ==============================
here               role                                               paper       official code
=================  =================================================  ==========  ==============================
``gen_a2b``        translates A to B; its encoder is tapped for NCE   G (G_enc)   ``netG``
``disc_b``         judges real vs fake B                              D           ``netD``
``proj``           patch sampler + 2-layer MLP projection head        H_l         ``netF`` (``PatchSampleF``)
``nce_layers``     ``gen_a2b.model`` indices tapped                   l           ``nce_layers``
``num_patches``    patches sampled per layer                          S_l         ``num_patches``
``lambda_nce``     PatchNCE weight                                    lambda_X    ``lambda_NCE``
``nce_idt``        also NCE(B, G(B))                                  lambda_Y    ``nce_idt``
``patch_rng``      draws patch positions and flips (checkpointed)     -           ``np.random``
=================  =================================================  ==========  ==============================

===================  ===============================================  ==========
logged here          what it is                                       official
===================  ===============================================  ==========
``train/g/gan``      lambda_gan * disc_b(gen_a2b(A)) judged real      ``G_GAN``
``train/g/nce_a``    PatchNCE(A, gen_a2b(A)) (weighted)               ``NCE``
``train/g/nce_b``    PatchNCE(B, gen_a2b(B)) (weighted; nce_idt)      ``NCE_Y``
``train/g/idt_b``    lambda_identity * |gen_a2b(B) - B|               (SinCUT)
``train/d/b``        0.5 * (real B -> real, fake B -> fake)           ``D``
===================  ===============================================  ==========

One step follows the official ``optimize_parameters``: one generator pass over ``cat(A, B)`` (``nce_idt``; A alone
otherwise), flipped along the width with probability 0.5 under ``flip_equivariance``; then the discriminator step on
the detached fakes; then the generator + F step, scored by the discriminator that was just updated (frozen). No
image pool. The projection head is built in ``__init__`` from ``gen_a2b.feature_channels(nce_layers)`` rather than
lazily on the first batch (the official ``data_dependent_initialize``): its parameters exist before any data, so
checkpoint loading, resume, the DDP wrap and the optimizers see them with no warm-up pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.models.base import UnpairedTranslationModel
from cyclegan_lightning.models.losses import GANLoss, PatchNCELoss
from cyclegan_lightning.models.patchnce import build_projection_head, patchnce_between, seeded_generator
from cyclegan_lightning.networks import set_activation_checkpointing


class CUT(UnpairedTranslationModel):
    """One generator (A -> B), one discriminator (judges B) and the projection head F; adversarial + PatchNCE.

    ``generator`` must be a ResNet (PatchNCE taps its encoder); ``discriminator`` any discriminator spec. F is
    built here from ``gen_a2b.feature_channels(nce_layers)``, not lazily on the first batch as in the official code,
    so checkpoint loading, resume, DDP and the optimizers need no warm-up pass. Validation, checkpoints,
    accumulation and the non-finite policy come from ``UnpairedTranslationModel``.
    """

    network_names = ("gen_a2b", "disc_b", "proj")
    optimizer_names = ("g", "d", "f")

    def __init__(
        self,
        generator: dict,  # {_target_: a ResnetGenerator, **kwargs}: PatchNCE taps its encoder
        discriminator: dict,  # {_target_: network class, **kwargs}: judges B
        channels_a: int = 3,  # image channels of domain A (1 or 3)
        channels_b: int = 3,
        gan_mode: str = "lsgan",  # lsgan | vanilla | wgangp
        lambda_gan: float = 1.0,  # adversarial weight (official lambda_GAN)
        lambda_nce: float = 1.0,  # PatchNCE weight (official lambda_NCE; FastCUT 10)
        nce_idt: bool = True,  # also NCE(B, G(B)); the NCE term is then 0.5 * (NCE_A + NCE_B) (FastCUT: off)
        nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16),  # gen_a2b.model indices tapped (ascending)
        num_patches: int = 256,  # patch positions sampled per layer
        nce_temperature: float = 0.07,  # official nce_T
        nce_negatives_from_minibatch: bool = False,  # negatives from the whole batch (SinCUT), not only the image
        projection_dim: int = 256,  # width of F's MLP and of the projections (official netF_nc)
        flip_equivariance: bool = False,  # flip the batch with p=0.5 per step; NCE on flipped-back features (FastCUT)
        lambda_identity: float = 0.0,  # L1 |gen_a2b(B) - B| weight, absolute (off in CUT and FastCUT; SinCUT 1)
        lambda_gp: float = 10.0,  # gradient-penalty weight, used with gan_mode=wgangp only
        lr: float = 2e-4,  # initial learning rate of the G, D and F optimizers
        betas: tuple[float, float] = (0.5, 0.999),  # Adam betas
        lr_policy: str = "linear",  # linear | step | cosine | cosine_full, the same for G, D and F (schedulers.py)
        n_epochs: int = 200,  # epochs at the initial LR (linear policy; official CUT 200, FastCUT 150)
        n_epochs_decay: int = 200,  # epochs of linear decay to zero that follow (official CUT 200, FastCUT 50)
        lr_step_epochs: int = 50,  # step policy: multiply by lr_gamma every this many epochs
        lr_gamma: float = 0.1,
        init_type: str = "xavier",  # the official CUT initialises G, D and F with xavier_normal...
        init_gain: float = 0.02,  # ...gain 0.02
        gradient_clip_val: float | None = None,  # clip each optimizer's gradient norm (after AMP unscaling)
        nonfinite_policy: str = "stop",  # stop | skip: a NaN/Inf loss, checked before backward, stops or skips the step
        channels_last: bool = False,  # speed lever (docs/performance.md)
        compile_generators: bool = False,  # torch.compile the generator in place (keys unchanged)
        adam_impl: str | None = None,  # None (torch's choice) | foreach | fused
        identity_init_steps: int = 0,  # before a fresh fit, train the generator this many steps to copy its input
        activation_checkpointing: bool = False,  # recompute the generator's residual blocks in backward
        accumulate_grad_batches: int = 1,  # each optimizer steps once per this many batches, on their summed grads
        # ---- stabilisers (docs/stabilisers.md), all off by default: the same flags as CycleGAN's ----
        diffaugment: str | list[str] | None = None,  # e.g. "color,translation,cutout": DiffAugment of D's inputs
        ada_target: float | None = None,  # e.g. 0.6: adapt DiffAugment's probability to this overfitting signal
        ada_interval: int = 4,  # ADA: adjust the probability every this many steps
        ada_kimg: float = 100.0,  # ADA: thousands of images for the probability to go from 0 to 1
        ema_decay: float | None = None,  # e.g. 0.999: EMA of the generator, used for validation/prediction/export
        lambda_r1: float = 0.0,  # R1 penalty weight (gamma) on real images; the loss adds gamma/2 * E|grad D|^2
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # run_training logs the whole resolved config once
        self.check_common_hparams()
        for name, on in (("lambda_identity", lambda_identity > 0), ("nce_idt", nce_idt and lambda_nce > 0)):
            if on and channels_a != channels_b:
                raise ConfigError(
                    f"model.{name} feeds B images to the A->B generator: it needs equal channels in both domains "
                    f"(got A={channels_a}, B={channels_b}); set it off"
                )
        self.gen_a2b = self.build_network(generator, input_nc=channels_a, output_nc=channels_b)
        self.proj = build_projection_head(self.gen_a2b, nce_layers, num_patches, projection_dim, init_type, init_gain)
        self.disc_b = self.build_network(discriminator, input_nc=channels_b)
        self.gan_loss = GANLoss(gan_mode)
        self.patchnce = PatchNCELoss(nce_temperature, nce_negatives_from_minibatch)
        # patch positions and flips: a generator of its own, checkpointed (random_generators), so a resumed run
        # draws exactly what the uninterrupted one would have
        self.patch_rng = seeded_generator()
        self.init_validation_metrics(channels_a, channels_b)
        self.init_stabilisers()
        if activation_checkpointing:
            set_activation_checkpointing(self.gen_a2b)

    @property
    def random_generators(self) -> dict[str, torch.Generator]:
        return {"patch": self.patch_rng}

    # ---- losses (pure: no optimizer, unit-testable) --------------------------------------------------------------
    def nce_loss(self, src: torch.Tensor, tgt: torch.Tensor, flipped: bool = False) -> torch.Tensor:
        """PatchNCE between ``src`` and its translation ``tgt``, weighted by ``lambda_nce``, mean over layers."""
        hp = self.hparams
        return patchnce_between(
            self.gen_a2b, self.proj, self.patchnce, src, tgt, hp.nce_layers, self.patch_rng, hp.lambda_nce, flipped
        )

    def generator_losses(self, real_a, real_b, fake_b, idt_b, flipped: bool = False) -> dict[str, torch.Tensor]:
        """Adversarial (the caller freezes disc_b), PatchNCE and the optional L1 identity, and ``total``."""
        hp = self.hparams
        losses = {}
        if hp.lambda_gan > 0:
            losses["gan"] = self.gan_loss(self.judge(self.disc_b, fake_b), True) * hp.lambda_gan
        if hp.lambda_nce > 0:
            losses["nce_a"] = self.nce_loss(real_a, fake_b, flipped)
            if hp.nce_idt:
                losses["nce_b"] = self.nce_loss(real_b, idt_b, flipped)
        if hp.lambda_identity > 0:
            losses["idt_b"] = F.l1_loss(idt_b, real_b) * hp.lambda_identity
        nce = 0.5 * (losses["nce_a"] + losses["nce_b"]) if "nce_b" in losses else losses.get("nce_a", 0.0)
        losses["total"] = losses.get("gan", 0.0) + nce + losses.get("idt_b", 0.0)
        return losses

    def discriminator_losses(self, real_b, fake_b) -> dict[str, torch.Tensor]:
        """disc_b on real vs detached fake B (``discriminator_loss``, fakes judged first as in the official code)."""
        losses = {}
        self.discriminator_loss("b", self.disc_b, real_b, fake_b, losses, fake_first=True)
        losses["total"] = losses["b"]
        return losses

    # ---- training ------------------------------------------------------------------------------------------------
    def translate_for_training(self, real_a: torch.Tensor, real_b: torch.Tensor):
        """The step's one generator pass, on ``cat(A, B)`` when B's translation is needed: ``(fake_b, idt_b or
        None, flipped)``; under flip equivariance the whole batch is flipped with probability 0.5."""
        hp = self.hparams
        with_b = (hp.nce_idt and hp.lambda_nce > 0) or hp.lambda_identity > 0
        real = torch.cat((real_a, real_b)) if with_b else real_a
        flipped = bool(hp.flip_equivariance and torch.rand((), generator=self.patch_rng) < 0.5)
        fake = self.gen_a2b(real.flip(3) if flipped else real)
        n = real_a.shape[0]
        return fake[:n], (fake[n:] if with_b else None), flipped

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """The official ``optimize_parameters``: one generator pass; D phase on the detached fakes; G and F phase,
        scored by the D just updated, frozen (``optimize``: accumulation, AMP, the non-finite policy, EMA/ADA)."""
        opt_g, opt_d, opt_f = self.optimizers()
        real_a, real_b = batch["a"], batch["b"]
        fake_b, idt_b, flipped = self.translate_for_training(real_a, real_b)

        d_losses = self.discriminator_losses(real_b, fake_b)
        if not self.optimize("d", d_losses, opt_d):
            return  # non-finite, skipped: the generator's output is suspect too

        with self.frozen(self.disc_b):  # gradients flow through D to G and F, but D is not updated
            g_losses = self.generator_losses(real_a, real_b, fake_b, idt_b, flipped)
            g_ok = self.optimize("g", g_losses, opt_g, opt_f)
        self.log_losses(g_losses if g_ok else {}, d_losses, real_a.shape[0])  # a NaN would poison the epoch means

    def configure_optimizers(self):
        optimizers = [self.adam(self.gen_a2b), self.adam(self.disc_b), self.adam(self.proj)]
        return optimizers, self.build_schedulers(optimizers)
