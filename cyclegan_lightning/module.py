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
``train/d/a``        disc_a on real A vs pooled fake A         ``D_B``
``train/d/b``        disc_b on real B vs pooled fake B         ``D_A``
===================  ========================================  =========

One training step follows the reference exactly: one forward of both cycles, the generator step with the
discriminators frozen, then the discriminator step on pooled, detached fakes made before the generator step.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
from typing import Any

import hydra
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn
from torchmetrics import MeanMetric

from cyclegan_lightning.checkpoint_safety import check_compatible, safe_load
from cyclegan_lightning.errors import CheckpointError, ConfigError, NumericalError
from cyclegan_lightning.evaluation.swd import SlicedWassersteinDistance
from cyclegan_lightning.health import DiversityRatio, discriminator_accuracy, translation_change
from cyclegan_lightning.image_pool import ImagePool
from cyclegan_lightning.losses import GANLoss, gradient_penalty
from cyclegan_lightning.models.stabilisers import StabiliserHooks
from cyclegan_lightning.networks import init_weights, set_activation_checkpointing
from cyclegan_lightning.resume import load_run_state, save_run_state
from cyclegan_lightning.schedulers import build_scheduler

log = logging.getLogger(__name__)

DIRECTIONS = ("a2b", "b2a")
ADAM_IMPLS = (None, "foreach", "fused")
CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes incompatibly
NONFINITE_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_NONFINITE = 20  # nonfinite_policy=skip still stops after this many bad batches in a row


class CycleGAN(StabiliserHooks, LightningModule):
    """Two generators, two discriminators, adversarial + cycle + identity losses, image pools, per-epoch LR decay.

    ``generator`` and ``discriminator`` are plain dicts with a ``_target_`` (a network class) and its keyword
    arguments, as in ``conf/model/generator/*.yaml``; channel counts come from ``channels_a``/``channels_b``.
    Every hyperparameter is a plain value, so checkpoints load with torch's default ``weights_only=True``.
    """

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
        self.automatic_optimization = False
        if nonfinite_policy not in NONFINITE_POLICIES:
            raise ConfigError(f"model.nonfinite_policy must be one of {NONFINITE_POLICIES}, got {nonfinite_policy!r}")
        self._nonfinite_in_a_row = 0
        if lambda_identity > 0 and channels_a != channels_b:
            raise ConfigError(
                f"identity loss needs equal channels in both domains (got A={channels_a}, B={channels_b}); "
                "set model.lambda_identity=0"
            )
        self.gen_a2b = self._build(generator, channels_a, channels_b, "input_nc", "output_nc")
        self.gen_b2a = self._build(generator, channels_b, channels_a, "input_nc", "output_nc")
        self.disc_a = self._build(discriminator, channels_a)
        self.disc_b = self._build(discriminator, channels_b)
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_a = lambda_cycle if lambda_cycle_a is None else lambda_cycle_a
        self.lambda_b = lambda_cycle if lambda_cycle_b is None else lambda_cycle_b
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.val_cycle = nn.ModuleDict({"a": MeanMetric(), "b": MeanMetric()})
        # translation quality (docs/quality.md): SWD of translations vs real target images, per direction
        self.val_swd = nn.ModuleDict({d: SlicedWassersteinDistance() for d in DIRECTIONS})
        self.val_change = nn.ModuleDict({d: MeanMetric() for d in DIRECTIONS})  # health: drift towards identity
        self.val_diversity = nn.ModuleDict(
            {"a2b": DiversityRatio(channels_a, channels_b), "b2a": DiversityRatio(channels_b, channels_a)}
        )  # health: collapse to one output
        if adam_impl not in ADAM_IMPLS:
            raise ConfigError(f"model.adam_impl must be one of {ADAM_IMPLS}, got {adam_impl!r}")
        if not isinstance(accumulate_grad_batches, int) or accumulate_grad_batches < 1:
            raise ConfigError(f"model.accumulate_grad_batches must be an integer >= 1, got {accumulate_grad_batches!r}")
        if activation_checkpointing:
            for gen in (self.gen_a2b, self.gen_b2a):
                set_activation_checkpointing(gen)
        generators = {"a2b": self.gen_a2b, "b2a": self.gen_b2a}
        self.init_stabilisers(
            generators, gan_mode, diffaugment, ada_target, ada_interval, ada_kimg, ema_decay, lambda_r1
        )

    def _build(self, spec: dict, in_channels: int, out_channels: int | None = None, *names: str) -> nn.Module:
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise ConfigError(f"network spec needs a _target_ (a network class), got {spec!r}")
        kwargs = {"input_nc": in_channels} if out_channels is None else {names[0]: in_channels, names[1]: out_channels}
        net = hydra.utils.instantiate(spec, **kwargs)
        return init_weights(net, self.hparams.init_type, self.hparams.init_gain)

    # ---- inference ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """Translate a batch in [-1, 1] of any size; the output has exactly the input's height and width."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        gen = self.averaged_generator(direction) or (self.gen_a2b if direction == "a2b" else self.gen_b2a)
        h, w = x.shape[-2:]
        m = getattr(gen, "size_multiple", 1)
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return gen(x)[..., :h, :w]

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
        losses["total"] = sum(losses.values())
        return losses

    def discriminator_losses(self, real_a, real_b, fake_a, fake_b) -> dict[str, torch.Tensor]:
        """Each discriminator: 0.5 * (real -> 1, fake -> 0) [+ gradient penalty], on detached fakes; also the
        fraction of its patch decisions that are right (``acc_real_*``, ``acc_fake_*``: health signals, no grad)."""
        losses = {}
        for name, disc, real, fake in (("a", self.disc_a, real_a, fake_a), ("b", self.disc_b, real_b, fake_b)):
            fake = fake.detach()
            pred_real = self.judge(disc, real)
            loss_real = self.gan_loss(pred_real, True)
            pred_fake = self.judge(disc, fake)
            loss = 0.5 * (loss_real + self.gan_loss(pred_fake, False))
            loss = self.regularise_discriminator(name, disc, real, pred_real, loss, losses)  # ADA signal, R1
            for kind, pred, is_real in (("real", pred_real, True), ("fake", pred_fake, False)):
                acc = discriminator_accuracy(pred, is_real, self.hparams.gan_mode)
                if acc is not None:
                    losses[f"acc_{kind}_{name}"] = acc
            if self.hparams.gan_mode == "wgangp":
                with torch.autocast(self.device.type, enabled=False):  # second-order grads in fp32
                    gp = gradient_penalty(disc, real.float(), fake.float())
                losses[f"gp_{name}"] = gp
                loss = loss + self.hparams.lambda_gp * gp
            losses[name] = loss
        losses["total"] = losses["a"] + losses["b"]
        return losses

    # ---- training ------------------------------------------------------------------------------------------------
    def _set_discriminators_trainable(self, trainable: bool) -> None:
        for p in itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()):
            p.requires_grad_(trainable)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        k = self.hparams.get("accumulate_grad_batches", 1)
        stepping = self._closes_accumulation_window(batch_idx)
        if batch_idx % k == 0:  # a window opens (k=1: every batch); a non-finite batch leaves no stale gradients
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
        real_a, real_b = batch["a"], batch["b"]
        fake_b = self.gen_a2b(real_a)
        rec_a = self.gen_b2a(fake_b)
        fake_a = self.gen_b2a(real_b)
        rec_b = self.gen_a2b(fake_a)

        self._set_discriminators_trainable(False)  # gradients flow through D to G, but D is not updated
        g_losses = self.generator_losses(real_a, real_b, fake_a, fake_b, rec_a, rec_b)
        if not self._losses_finite(g_losses, "g", batch_idx):  # checked before backward: weights stay clean
            self._set_discriminators_trainable(True)
            return  # skip the whole batch: the fakes feeding the discriminators are suspect too
        with self._sync_gradients(stepping):
            self.manual_backward(g_losses["total"] / k if k > 1 else g_losses["total"])
        if stepping:
            with self._loss_scale_kept(opt_d):
                opt_g.step()
            self.after_generator_step()  # EMA
        self._set_discriminators_trainable(True)

        d_losses = self.discriminator_losses(real_a, real_b, self.pool_a.query(fake_a), self.pool_b.query(fake_b))
        d_ok = self._losses_finite(d_losses, "d", batch_idx)
        if d_ok:
            with self._sync_gradients(stepping):
                self.manual_backward(d_losses["total"] / k if k > 1 else d_losses["total"])
            if stepping:
                opt_d.step()
            self.after_discriminator_step(real_a.shape[0])  # ADA
            self._nonfinite_in_a_row = 0
        else:
            d_losses = {}  # not logged: one NaN would poison the epoch means

        logged = {f"train/g/{k}": v.detach() for k, v in g_losses.items()}
        logged |= {f"train/d/{k}": v.detach() for k, v in d_losses.items()}
        self.log_dict(logged, batch_size=real_a.shape[0])
        bar = {"g": g_losses["total"].detach()} | ({"d": d_losses["total"].detach()} if d_ok else {})
        self.log_dict(bar, prog_bar=True, logger=False, batch_size=real_a.shape[0])
        if "skipped" in batch:
            skipped = batch["skipped"].float().sum()
            self.log("data/skipped_images", skipped, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)

    # ---- gradient accumulation (model.accumulate_grad_batches) ------------------------------------------------------
    def _closes_accumulation_window(self, batch_idx: int) -> bool:
        """True on every k-th batch of an epoch and on its last batch (a short last window still steps)."""
        k = self.hparams.get("accumulate_grad_batches", 1)
        if k == 1 or (batch_idx + 1) % k == 0:
            return True
        trainer = self._trainer
        return trainer is not None and (trainer.is_last_batch or batch_idx + 1 == trainer.num_training_batches)

    def _sync_gradients(self, stepping: bool) -> contextlib.AbstractContextManager:
        """DDP all-reduces gradients only in the backward passes of a stepping batch (``no_sync`` otherwise)."""
        trainer = self._trainer
        if stepping or trainer is None or trainer.world_size == 1:
            return contextlib.nullcontext()
        return trainer.strategy.block_backward_sync()

    @contextlib.contextmanager
    def _loss_scale_kept(self, opt_d):
        """Around the generator step under fp16 AMP with accumulation: the step updates the shared GradScaler, so
        the discriminators' gradients accumulated at the old scale are brought to the new one (a power of two,
        exact)."""
        scaler = getattr(self._trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        if scaler is None or self.hparams.get("accumulate_grad_batches", 1) == 1 or not scaler.is_enabled():
            yield
            return
        before = scaler.get_scale()
        yield
        after = scaler.get_scale()
        if after != before:
            for group in opt_d.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(after / before)

    def _losses_finite(self, losses: dict[str, torch.Tensor], group: str, batch_idx: int) -> bool:
        """True if every loss is finite (one device sync); else stop (raise) or skip, per ``nonfinite_policy``.

        All ranks reach the same decision, so under DDP no rank enters a backward the others skip.
        """
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        bad = not bool(torch.isfinite(values).all())
        trainer = self._trainer  # (the ``trainer`` property raises when detached)
        if trainer is not None and trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return True
        named = ", ".join(f"train/{group}/{k}={float(v):g}" for k, v in losses.items() if not torch.isfinite(v).all())
        where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        self._nonfinite_in_a_row += 1
        if (
            self.hparams.get("nonfinite_policy", "stop") == "stop"
            or self._nonfinite_in_a_row > MAX_CONSECUTIVE_NONFINITE
        ):
            in_a_row = f" ({self._nonfinite_in_a_row} bad batches in a row)" if self._nonfinite_in_a_row > 1 else ""
            raise NumericalError(
                f"non-finite loss at {where}{in_a_row}: {named or 'on another rank'}. Training stopped before "
                "backward, so the weights were not updated with it and no checkpoint was written from it; the last "
                "good checkpoint is checkpoints/last.ckpt. Lower model.lr, check the data, or set "
                "model.nonfinite_policy=skip to skip such steps."
            )
        log.warning("skipping the %s step at %s: non-finite loss %s (model.nonfinite_policy=skip)", group, where, named)
        self.log("train/nonfinite_skipped", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
        return False

    def _check_finite_weights(self) -> None:
        """Refuse to save NaN/Inf weights: a poisoned checkpoint must never replace a good one."""
        for name, tensor in self.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NumericalError(
                    f"parameter {name} holds NaN/Inf at global step {self.global_step}; refusing to write a "
                    "checkpoint from it, so the earlier checkpoints stay as they were."
                )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # runs after AMP unscaling, so the clip threshold applies to true gradients
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)

    def on_train_epoch_end(self) -> None:
        opt_g, opt_d = self.optimizers()
        self.log("train/lr", opt_g.param_groups[0]["lr"])  # the LR this epoch used (generators)
        self.log("train/lr_d", opt_d.param_groups[0]["lr"])  # discriminators (same policy)
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ---- validation ----------------------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Images of domain A (loader 0) or B (loader 1): cycle-reconstruction L1, their translations for the
        quality metric and health signals, and the images themselves as the real target of the other direction.
        Never touches the pools."""
        domain = "ab"[dataloader_idx]
        real = batch["image"]
        there, back = ("a2b", "b2a") if domain == "a" else ("b2a", "a2b")
        fake = self(real, there)
        rec = self(fake, back)
        self.val_cycle[domain].update((rec.float() - real.float()).abs().flatten(1).mean(1))
        self.val_swd[there].update(fake, real=False)
        self.val_swd[back].update(real, real=True)  # real A is what B->A should look like, and vice versa
        self.val_change[there].update(translation_change(real, fake))
        self.val_diversity[there].update(real, fake)

    def on_validation_epoch_end(self) -> None:
        cycle = {d: self.val_cycle[d].compute() for d in ("a", "b")}
        swd = {d: self.val_swd[d].compute() for d in DIRECTIONS}
        health = {f"val/health/change_{d}": self.val_change[d].compute() for d in DIRECTIONS}
        health |= {f"val/health/diversity_{d}": self.val_diversity[d].compute() for d in DIRECTIONS}
        for group in (self.val_cycle, self.val_swd, self.val_change, self.val_diversity):
            for metric in group.values():
                metric.reset()
        self.log_dict({"val/cycle_a": cycle["a"], "val/cycle_b": cycle["b"]})
        self.log("val/cycle", (cycle["a"] + cycle["b"]) / 2)
        self.log_dict({"val/swd_a2b": swd["a2b"], "val/swd_b2a": swd["b2a"]})
        self.log("val/swd", (swd["a2b"] + swd["b2a"]) / 2, prog_bar=True)  # the checkpoint monitor (lower is better)
        self.log_dict(health)

    def on_fit_start(self) -> None:
        steps = self.hparams.get("identity_init_steps", 0)
        if steps and self.trainer.ckpt_path is None:  # a resumed run has its trained generators already
            self.init_generators_to_identity(steps)

    def init_generators_to_identity(self, steps: int, batch_size: int = 4, lr: float = 1e-3) -> None:
        """Train both generators alone to reproduce their input (L1) on training images, with a throwaway Adam.

        Freshly initialised generators output noise, and the adversarial game wrecks the content before the cycle
        loss teaches it to keep it (small data, short runs); starting from an identity map keeps the content from
        the first step, so the run only has to learn the style. Opt-in (``identity_init_steps``), for demos and
        small data; the reference starts from the random init.
        """
        data = getattr(self.trainer.datamodule, "train_set", None)
        if data is None:
            raise ConfigError("model.identity_init_steps needs a datamodule with a train_set (UnpairedDataModule)")
        gens = (self.gen_a2b, self.gen_b2a)
        opt = torch.optim.Adam(itertools.chain(*(g.parameters() for g in gens)), lr=lr, betas=(0.5, 0.999))
        pick = torch.Generator().manual_seed(0)
        for _ in range(steps):
            index = torch.randint(len(data), (batch_size,), generator=pick).tolist()
            samples = [data[i] for i in index]
            loss = 0.0
            for gen, key in ((self.gen_b2a, "a"), (self.gen_a2b, "b")):  # each generator on its output domain
                real = torch.stack([s[key] for s in samples]).to(self.device)
                loss = loss + F.l1_loss(gen(real), real)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # ranks drew different crops: every rank starts from rank 0's result, as DDP starts from rank 0's weights
            for tensor in itertools.chain(*(g.parameters() for g in gens), *(g.buffers() for g in gens)):
                dist.broadcast(tensor.data, src=0)
        log.info("generators trained to copy their input for %d steps (L1 %.4f)", steps, float(loss) / 2)

    # ---- optimizers and checkpoints --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Speed levers that change how the networks run, not what they compute (see docs/performance.md)."""
        if self.hparams.get("channels_last"):
            self.to(memory_format=torch.channels_last)  # .to(device) later keeps the format
        if self.hparams.get("compile_generators"):
            for gen in (self.gen_a2b, self.gen_b2a):
                gen.compile()  # in place: state-dict keys stay ``gen_a2b.model.*`` (not ``_orig_mod.*``)

    def configure_optimizers(self):
        hp = self.hparams
        impl = {hp.adam_impl: True} if hp.get("adam_impl") else {}  # fused / foreach Adam (speed lever)
        opt_g = torch.optim.Adam(
            itertools.chain(self.gen_a2b.parameters(), self.gen_b2a.parameters()),
            lr=hp.lr,
            betas=tuple(hp.betas),
            **impl,
        )
        opt_d = torch.optim.Adam(
            itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()),
            lr=hp.lr,
            betas=tuple(hp.betas),
            **impl,
        )
        schedulers = [
            build_scheduler(opt, hp.lr_policy, hp.n_epochs, hp.n_epochs_decay, hp.lr_step_epochs, hp.lr_gamma)
            for opt in (opt_g, opt_d)
        ]
        return [opt_g, opt_d], schedulers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite_weights()  # raises before anything is written (numerical health)
        checkpoint["cyclegan_lightning"] = {"format": CHECKPOINT_FORMAT}
        checkpoint["image_pools"] = {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()}
        save_run_state(self, checkpoint)  # random states, every rank's pools under DDP, W&B run id (resume.py)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_compatible(self, checkpoint)  # newer format / other architecture: a clear CheckpointError
        pools = checkpoint.get("image_pools")
        if pools:
            self.pool_a.load_state_dict(pools["a"])
            self.pool_b.load_state_dict(pools["b"])
        load_run_state(self, checkpoint)  # when resuming fit: this rank's pools and random states

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's loader, always with ``weights_only=True``: a checkpoint carrying pickled code is refused
        (``CheckpointError``) without running it; a newer format or another architecture gets a clear message."""
        if kwargs.pop("weights_only", True) is not True:
            raise CheckpointError("CycleGAN checkpoints load with weights_only=True only; unpickling code is unsafe")
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs
            )
        except pickle.UnpicklingError:
            if isinstance(checkpoint_path, (str, bytes)) or hasattr(checkpoint_path, "__fspath__"):
                safe_load(checkpoint_path)  # raises the clear CheckpointError
            raise
