"""What every unpaired-translation model shares, so a model family only writes its networks and its training step.

``UnpairedTranslationModel`` is a ``LightningModule`` with manual optimization. A subclass builds its networks in
``__init__`` (with ``build_network``), names them in ``network_names``, keeps its generators as ``gen_a2b`` /
``gen_b2a`` (either may be absent: CUT translates one way), calls ``init_validation_metrics`` and writes
``training_step`` and ``configure_optimizers`` (with ``adam`` and ``build_schedulers``). The base gives it:

- ``forward(x, direction)`` on images of any size (``networks/padding.py``, the padding of prediction and export);
- validation: ``val/swd`` per direction against real target images (the checkpoint monitor), ``val/cycle`` when
  both directions exist, and the health signals (``val/health/change_*``, ``diversity_*``);
- the non-finite-loss policy, gradient accumulation under manual optimization (DDP ``no_sync``, AMP scale kept),
  gradient clipping, per-epoch LR steps;
- checkpoints: the format marker, the compatibility check, image pools per DDP rank, the model's own random
  generators (``random_generators``: CUT's patch positions), no NaN weights written, and ``load_from_checkpoint``
  with ``weights_only=True`` only;
- training-step helpers: ``set_trainable`` (freeze a discriminator), ``log_losses`` (``train/g/*``, ``train/d/*``);
- optional speed levers (``channels_last``, ``compile_generators``) and the identity warm-up;
- the stabilisers' hooks (``models/stabilisers.py``: DiffAugment/ADA, R1, generator EMA; docs/stabilisers.md).

It reads these hyperparameters, which every subclass declares (``save_hyperparameters``): ``init_type``,
``init_gain``, ``lr``, ``betas``, ``lr_policy``, ``n_epochs``, ``n_epochs_decay``, ``lr_step_epochs``,
``lr_gamma``, ``adam_impl``, ``gradient_clip_val``, ``nonfinite_policy``, ``accumulate_grad_batches``,
``channels_last``, ``compile_generators``, ``identity_init_steps``.
Nothing here knows about runs (loggers, resume, random states): that is ``training/`` and ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
from collections.abc import Iterable
from typing import Any

import hydra
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn
from torchmetrics import MeanMetric

from cyclegan_lightning.checkpoints.format import MARKER, check_compatible, format_marker
from cyclegan_lightning.checkpoints.loading import safe_load
from cyclegan_lightning.checkpoints.per_rank import gather_per_rank, this_rank
from cyclegan_lightning.directions import DIRECTIONS, ENDPOINTS, LEAVING, REVERSE
from cyclegan_lightning.errors import CheckpointError, ConfigError, NumericalError
from cyclegan_lightning.metrics.health import DiversityRatio, discriminator_accuracy, translation_change
from cyclegan_lightning.metrics.swd import SlicedWassersteinDistance
from cyclegan_lightning.models.image_pool import ImagePool
from cyclegan_lightning.models.losses import gradient_penalty
from cyclegan_lightning.models.schedulers import build_scheduler
from cyclegan_lightning.models.stabilisers import StabiliserHooks
from cyclegan_lightning.networks import init_weights
from cyclegan_lightning.networks.padding import translate_padded

log = logging.getLogger(__name__)

ADAM_IMPLS = (None, "foreach", "fused")
NONFINITE_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_NONFINITE = 20  # nonfinite_policy=skip still stops after this many bad batches in a row


class UnpairedTranslationModel(StabiliserHooks, LightningModule):
    """Base of every model family (see the module docstring for the contract)."""

    network_names: tuple[str, ...] = ()  # attributes holding the networks whose weights a checkpoint must match

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._nonfinite_in_a_row = 0

    def check_common_hparams(self) -> None:
        """Refuse bad values of the shared hyperparameters with a one-line ``ConfigError``."""
        hp = self.hparams
        if hp.nonfinite_policy not in NONFINITE_POLICIES:
            raise ConfigError(
                f"model.nonfinite_policy must be one of {NONFINITE_POLICIES}, got {hp.nonfinite_policy!r}"
            )
        if hp.adam_impl not in ADAM_IMPLS:
            raise ConfigError(f"model.adam_impl must be one of {ADAM_IMPLS}, got {hp.adam_impl!r}")
        k = hp.accumulate_grad_batches
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"model.accumulate_grad_batches must be an integer >= 1, got {k!r}")

    def build_network(self, spec: dict, **channels: int) -> nn.Module:
        """Instantiate ``spec`` (``{_target_: network class, **kwargs}``) with the given channel arguments, then
        initialise its weights with ``init_type`` / ``init_gain``."""
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise ConfigError(f"network spec needs a _target_ (a network class), got {spec!r}")
        net = hydra.utils.instantiate(spec, **channels)
        return init_weights(net, self.hparams.init_type, self.hparams.init_gain)

    # ---- generators and inference ---------------------------------------------------------------------------------
    @property
    def generators(self) -> dict[str, nn.Module]:
        """The generators this model has, by direction (``a2b`` and/or ``b2a``)."""
        return {
            d: getattr(self, f"gen_{d}") for d in DIRECTIONS if isinstance(getattr(self, f"gen_{d}", None), nn.Module)
        }

    def forward(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """Translate a batch in [-1, 1] of any size; the output has exactly the input's height and width."""
        gens = self.generators
        if direction not in gens:
            raise ValueError(f"direction must be one of {tuple(gens)} for {type(self).__name__}, got {direction!r}")
        return translate_padded(self.averaged_generator(direction) or gens[direction], x)  # EMA outside training

    # ---- validation -----------------------------------------------------------------------------------------------
    def init_validation_metrics(self, channels_a: int, channels_b: int) -> None:
        """Metric states for every direction this model translates (call after building the generators)."""
        channels = {"a": channels_a, "b": channels_b}
        directions = tuple(self.generators)
        # translation quality (docs/quality.md): SWD of translations vs real target images, per direction
        self.val_swd = nn.ModuleDict({d: SlicedWassersteinDistance() for d in directions})
        self.val_change = nn.ModuleDict({d: MeanMetric() for d in directions})  # health: drift towards identity
        self.val_diversity = nn.ModuleDict(
            {d: DiversityRatio(*(channels[s] for s in ENDPOINTS[d])) for d in directions}
        )  # health: collapse to one output
        self.val_cycle = nn.ModuleDict({s: MeanMetric() for s in "ab"} if len(directions) == 2 else {})

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Images of domain A (loader 0) or B (loader 1): their translation for the quality metric and health
        signals, its cycle reconstruction when the model has both directions, and the images themselves as the real
        target of the other direction. Never touches the pools."""
        domain = "ab"[dataloader_idx]  # the datamodule's order of validation loaders
        real = batch["image"]
        there = LEAVING[domain]
        back = REVERSE[there]
        if back in self.val_swd:
            self.val_swd[back].update(real, real=True)  # real A is what B->A should look like, and vice versa
        if there not in self.val_swd:
            return
        fake = self(real, there)
        self.val_swd[there].update(fake, real=False)
        self.val_change[there].update(translation_change(real, fake))
        self.val_diversity[there].update(real, fake)
        if domain in self.val_cycle:
            rec = self(fake, back)
            self.val_cycle[domain].update((rec.float() - real.float()).abs().flatten(1).mean(1))

    def on_validation_epoch_end(self) -> None:
        computed = {name: {k: m.compute() for k, m in group.items()} for name, group in self._val_groups().items()}
        for group in self._val_groups().values():
            for metric in group.values():
                metric.reset()
        if computed["cycle"]:
            self.log_dict({f"val/cycle_{d}": v for d, v in computed["cycle"].items()})
            self.log("val/cycle", sum(computed["cycle"].values()) / len(computed["cycle"]))
        swd = computed["swd"]
        self.log_dict({f"val/swd_{d}": v for d, v in swd.items()})
        self.log("val/swd", sum(swd.values()) / len(swd), prog_bar=True)  # the checkpoint monitor (lower is better)
        self.log_dict({f"val/health/change_{d}": v for d, v in computed["change"].items()})
        self.log_dict({f"val/health/diversity_{d}": v for d, v in computed["diversity"].items()})

    def _val_groups(self) -> dict[str, nn.ModuleDict]:
        return {
            "cycle": self.val_cycle,
            "swd": self.val_swd,
            "change": self.val_change,
            "diversity": self.val_diversity,
        }

    # ---- optimizers -----------------------------------------------------------------------------------------------
    def adam(self, *networks: nn.Module) -> torch.optim.Adam:
        """Adam over ``networks`` with the model's ``lr``, ``betas`` and ``adam_impl`` (speed lever)."""
        hp = self.hparams
        impl = {hp.adam_impl: True} if hp.get("adam_impl") else {}
        params = itertools.chain.from_iterable(net.parameters() for net in networks)
        return torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), **impl)

    def build_schedulers(self, optimizers: Iterable[torch.optim.Optimizer]) -> list:
        """The same per-epoch LR policy for every optimizer (``schedulers.py``)."""
        hp = self.hparams
        return [
            build_scheduler(opt, hp.lr_policy, hp.n_epochs, hp.n_epochs_decay, hp.lr_step_epochs, hp.lr_gamma)
            for opt in optimizers
        ]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # runs after AMP unscaling, so the clip threshold applies to true gradients
        if self.hparams.get("gradient_clip_val"):
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)

    optimizer_names: tuple[str, ...] = ("g", "d")  # logged LRs: train/lr (the first), train/lr_<name> (the others)

    def on_train_epoch_end(self) -> None:
        for i, (name, opt) in enumerate(zip(self.optimizer_names, self.optimizers(), strict=True)):
            self.log("train/lr" if i == 0 else f"train/lr_{name}", opt.param_groups[0]["lr"])  # the LR this epoch used
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ---- training-step helpers ------------------------------------------------------------------------------------
    @staticmethod
    def set_trainable(trainable: bool, *networks: nn.Module) -> None:
        """Freeze (or unfreeze) ``networks``: gradients still flow through them to earlier networks."""
        for net in networks:
            for p in net.parameters():
                p.requires_grad_(trainable)

    def log_losses(self, g_losses: dict[str, torch.Tensor], d_losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """``train/g/*`` and ``train/d/*`` (epoch means), and the totals ``g`` / ``d`` on the progress bar; an empty
        dict (a skipped non-finite step) logs nothing, so one NaN never poisons the epoch means."""
        logged = {f"train/g/{k}": v.detach() for k, v in g_losses.items()}
        logged |= {f"train/d/{k}": v.detach() for k, v in d_losses.items()}
        self.log_dict(logged, batch_size=batch_size)
        bar = {name: losses["total"].detach() for name, losses in (("g", g_losses), ("d", d_losses)) if losses}
        self.log_dict(bar, prog_bar=True, logger=False, batch_size=batch_size)

    def finish_discriminator_loss(self, name, disc, real, fake, pred_real, pred_fake, loss, losses) -> torch.Tensor:
        """The tail every discriminator loss shares: its patch accuracies (``acc_real_<name>``, ``acc_fake_<name>``,
        health signals, no grad) and, under ``wgangp``, the gradient penalty (``gp_<name>``, in fp32). Returns the
        loss with the penalty added."""
        for kind, pred, is_real in (("real", pred_real, True), ("fake", pred_fake, False)):
            acc = discriminator_accuracy(pred, is_real, self.hparams.gan_mode)
            if acc is not None:
                losses[f"acc_{kind}_{name}"] = acc
        if self.hparams.gan_mode == "wgangp":
            with torch.autocast(self.device.type, enabled=False):  # second-order grads in fp32
                losses[f"gp_{name}"] = gradient_penalty(disc, real.float(), fake.float())
            loss = loss + self.hparams.lambda_gp * losses[f"gp_{name}"]
        return loss

    # ---- gradient accumulation (model.accumulate_grad_batches) ----------------------------------------------------
    def closes_accumulation_window(self, batch_idx: int) -> bool:
        """True on every k-th batch of an epoch and on its last batch (a short last window still steps)."""
        k = self.hparams.get("accumulate_grad_batches", 1)
        if k == 1 or (batch_idx + 1) % k == 0:
            return True
        trainer = self._trainer
        return trainer is not None and (trainer.is_last_batch or batch_idx + 1 == trainer.num_training_batches)

    def backward_scaled(self, loss: torch.Tensor, stepping: bool) -> None:
        """``manual_backward(loss / k)``; DDP all-reduces gradients only in the backward passes of a stepping batch
        (``no_sync`` otherwise)."""
        k = self.hparams.get("accumulate_grad_batches", 1)
        trainer = self._trainer
        sync = stepping or trainer is None or trainer.world_size == 1
        with contextlib.nullcontext() if sync else trainer.strategy.block_backward_sync():
            self.manual_backward(loss / k if k > 1 else loss)

    @contextlib.contextmanager
    def loss_scale_kept(self, *later_optimizers: torch.optim.Optimizer):
        """Around an optimizer step under fp16 AMP: the step updates the shared GradScaler, so the gradients that
        other optimizers hold at the old scale (accumulated over earlier batches, or from the same backward, as CUT's
        G and F) are brought to the new one (a power of two, exact)."""
        scaler = getattr(self._trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        if scaler is None or not scaler.is_enabled():
            yield
            return
        before = scaler.get_scale()
        yield
        after = scaler.get_scale()
        if after != before:
            for opt in later_optimizers:
                for group in opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(after / before)

    # ---- numerical health -----------------------------------------------------------------------------------------
    def losses_finite(self, losses: dict[str, torch.Tensor], group: str, batch_idx: int) -> bool:
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
        detached = {k: v.detach() for k, v in losses.items()}  # (a float of a tensor with a graph warns)
        named = ", ".join(f"train/{group}/{k}={float(v):g}" for k, v in detached.items() if not torch.isfinite(v).all())
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

    def batch_was_finite(self) -> None:
        """Call once a whole batch stepped: the count of non-finite batches in a row starts again."""
        self._nonfinite_in_a_row = 0

    def _check_finite_weights(self) -> None:
        """Refuse to save NaN/Inf weights: a poisoned checkpoint must never replace a good one."""
        for name, tensor in self.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NumericalError(
                    f"parameter {name} holds NaN/Inf at global step {self.global_step}; refusing to write a "
                    "checkpoint from it, so the earlier checkpoints stay as they were."
                )

    def log_skipped_images(self, batch: dict) -> None:
        if "skipped" in batch:
            skipped = batch["skipped"].float().sum()
            self.log("data/skipped_images", skipped, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)

    # ---- fit start: speed levers, identity warm-up ----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Speed levers that change how the networks run, not what they compute (see docs/performance.md)."""
        if self.hparams.get("channels_last"):
            self.to(memory_format=torch.channels_last)  # .to(device) later keeps the format
        if self.hparams.get("compile_generators"):
            for gen in self.generators.values():
                gen.compile()  # in place: state-dict keys stay ``gen_a2b.model.*`` (not ``_orig_mod.*``)

    def on_fit_start(self) -> None:
        steps = self.hparams.get("identity_init_steps", 0)
        if steps and self.trainer.ckpt_path is None:  # a resumed run has its trained generators already
            self.init_generators_to_identity(steps)

    def init_generators_to_identity(self, steps: int, batch_size: int = 4, lr: float = 1e-3) -> None:
        """Train the generators alone to reproduce their input (L1) on training images, with a throwaway Adam.

        Freshly initialised generators output noise, and the adversarial game wrecks the content before the cycle
        loss teaches it to keep it (small data, short runs); starting from an identity map keeps the content from
        the first step, so the run only has to learn the style. Opt-in (``identity_init_steps``), for demos and
        small data; the reference starts from the random init.
        """
        data = getattr(self.trainer.datamodule, "train_set", None)
        if data is None:
            raise ConfigError("model.identity_init_steps needs a datamodule with a train_set (UnpairedDataModule)")
        gens = self.generators
        opt = torch.optim.Adam(itertools.chain(*(g.parameters() for g in gens.values())), lr=lr, betas=(0.5, 0.999))
        pick = torch.Generator().manual_seed(0)
        for _ in range(steps):
            index = torch.randint(len(data), (batch_size,), generator=pick).tolist()
            samples = [data[i] for i in index]
            loss = 0.0
            for direction, gen in gens.items():  # each generator on images of its output domain
                real = torch.stack([s[ENDPOINTS[direction][1]] for s in samples]).to(self.device)
                loss = loss + F.l1_loss(gen(real), real)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # ranks drew different crops: every rank starts from rank 0's result, as DDP starts from rank 0's weights
            for gen in gens.values():
                for tensor in itertools.chain(gen.parameters(), gen.buffers()):
                    dist.broadcast(tensor.data, src=0)
        final = float(loss.detach()) / len(gens)  # (a float of a tensor with a graph warns)
        log.info("generators trained to copy their input for %d steps (L1 %.4f)", steps, final)

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    @property
    def image_pools(self) -> dict[str, ImagePool]:
        """Pools of fakes by domain; a model without pools returns ``{}``."""
        return {}

    @property
    def random_generators(self) -> dict[str, torch.Generator]:
        """The model's own ``torch.Generator``s by name (CUT's patch positions), saved and restored with the
        checkpoint so a resumed run draws what the uninterrupted one would have; ``{}`` when it has none."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite_weights()  # raises before anything is written (numerical health)
        checkpoint[MARKER] = format_marker(self)
        if self.random_generators:
            checkpoint["random_generators"] = {k: g.get_state() for k, g in self.random_generators.items()}
        if self.image_pools:  # every rank's pools (gathered to rank 0, which writes the file)
            mine = {d: pool.state_dict() for d, pool in self.image_pools.items()}
            checkpoint["image_pools"] = gather_per_rank(self._trainer, mine)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_compatible(self, checkpoint)  # no marker, newer format, other architecture: a clear CheckpointError
        for name, state in (checkpoint.get("random_generators") or {}).items():
            if name in self.random_generators:
                self.random_generators[name].set_state(state)
        saved = checkpoint.get("image_pools")
        if not saved or not self.image_pools:
            return
        if isinstance(saved, dict):  # format 1: rank 0's pools here, every rank's in "rank_states"
            ranks = checkpoint.get("rank_states")
            saved = [r["image_pools"] for r in ranks] if ranks else [saved]
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            mine = saved[0]  # load_from_checkpoint / predict: pools are unused
        else:
            mine = this_rank(trainer, saved, "image pools")
        for domain, pool in self.image_pools.items():
            pool.load_state_dict(mine[domain])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's loader, always with ``weights_only=True``: a checkpoint carrying pickled code is refused
        (``CheckpointError``) without running it; a newer format or another architecture gets a clear message."""
        if kwargs.pop("weights_only", True) is not True:
            raise CheckpointError("checkpoints load with weights_only=True only; unpickling code is unsafe")
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs
            )
        except pickle.UnpicklingError:
            if isinstance(checkpoint_path, (str, bytes)) or hasattr(checkpoint_path, "__fspath__"):
                safe_load(checkpoint_path)  # raises the clear CheckpointError
            raise
