"""What every unpaired-translation model shares, so a model family only writes its networks and its training step.

``UnpairedTranslationModel`` is a ``LightningModule`` with manual optimization. A subclass builds its networks in
``__init__`` (with ``build_network``), names them in ``network_names``, keeps its generators as ``gen_a2b`` /
``gen_b2a`` (either may be absent: CUT translates one way), calls ``init_validation_metrics`` and writes
``training_step`` (its phases through ``optimize``) and ``configure_optimizers`` (with ``adam`` and
``build_schedulers``). The base gives it:

- ``forward(x, direction)`` on images of any size (``networks/padding.py``, the padding of prediction and export);
- validation: ``val/swd`` per direction against real target images (the checkpoint monitor), ``val/cycle`` when
  both directions exist, and the health signals (``val/health/change_*``, ``diversity_*``);
- the training step's phases (``phases.py``: accumulation, DDP ``no_sync``, AMP loss scale, the non-finite policy,
  clipping), ``discriminator_loss``, ``log_losses`` and per-epoch LR steps;
- checkpoints: the format marker, the compatibility check, image pools per DDP rank, the model's own random
  generators (``random_generators``: CUT's patch positions), no NaN weights written, and ``load_from_checkpoint``
  with ``weights_only=True`` only;
- the stabilisers' hooks (``stabilisers.py``: DiffAugment/ADA, R1, generator EMA; docs/stabilisers.md) and the
  speed levers (``speed_levers.py``).

It reads these hyperparameters, which every subclass declares (``save_hyperparameters``): ``init_type``,
``init_gain``, ``lr``, ``betas``, ``lr_policy``, ``n_epochs``, ``n_epochs_decay``, ``lr_step_epochs``,
``lr_gamma``, ``adam_impl``, ``gradient_clip_val``, ``nonfinite_policy``, ``accumulate_grad_batches``,
``channels_last``, ``compile_generators``, ``gan_mode``, ``lambda_gp``. (``identity_init_steps`` is the model's
setting too, but the warm-up is a run's: ``training/identity_warmup.py``.)
Nothing here knows about runs (loggers, resume, random states): that is ``training/`` and ``checkpoints/``.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterable
from typing import Any

import hydra
import torch
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
from cyclegan_lightning.models.phases import NONFINITE_POLICIES, PhasedOptimization
from cyclegan_lightning.models.schedulers import build_scheduler
from cyclegan_lightning.models.speed_levers import apply_speed_levers
from cyclegan_lightning.models.stabilisers import StabiliserHooks
from cyclegan_lightning.networks import init_weights
from cyclegan_lightning.networks.padding import translate_padded

ADAM_IMPLS = (None, "foreach", "fused")


class UnpairedTranslationModel(StabiliserHooks, PhasedOptimization, LightningModule):
    """Base of every model family (see the module docstring for the contract)."""

    network_names: tuple[str, ...] = ()  # attributes holding the networks whose weights a checkpoint must match

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

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

    optimizer_names: tuple[str, ...] = ("g", "d")  # logged LRs: train/lr (the first), train/lr_<name> (the others)

    def on_train_epoch_end(self) -> None:
        for i, (name, opt) in enumerate(zip(self.optimizer_names, self.optimizers(), strict=True)):
            self.log("train/lr" if i == 0 else f"train/lr_{name}", opt.param_groups[0]["lr"])  # the LR this epoch used
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ---- training-step helpers ------------------------------------------------------------------------------------
    def log_losses(self, g_losses: dict[str, torch.Tensor], d_losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """``train/g/*`` and ``train/d/*`` (epoch means), and the totals ``g`` / ``d`` on the progress bar; an empty
        dict (a skipped non-finite step) logs nothing, so one NaN never poisons the epoch means."""
        logged = {f"train/g/{k}": v.detach() for k, v in g_losses.items()}
        logged |= {f"train/d/{k}": v.detach() for k, v in d_losses.items()}
        self.log_dict(logged, batch_size=batch_size)
        bar = {name: losses["total"].detach() for name, losses in (("g", g_losses), ("d", d_losses)) if losses}
        self.log_dict(bar, prog_bar=True, logger=False, batch_size=batch_size)

    def discriminator_loss(self, name: str, disc: nn.Module, real, fake, losses: dict, fake_first: bool = False):
        """``losses[name]``: ``disc``'s loss, 0.5 * (real -> real, fake -> fake) on the detached ``fake``, with R1 and
        ADA's signal (``regularise_discriminator``) and, under ``wgangp``, the gradient penalty (``gp_<name>``, in
        fp32); also its patch accuracies (``acc_real_<name>``, ``acc_fake_<name>``: health signals, no grad).
        ``fake_first`` judges the fakes first (the official CUT's order: DiffAugment draws in call order)."""
        fake = fake.detach()
        if fake_first:
            pred_fake, pred_real = self.judge(disc, fake), self.judge(disc, real)
        else:
            pred_real, pred_fake = self.judge(disc, real), self.judge(disc, fake)
        loss = 0.5 * (self.gan_loss(pred_real, True) + self.gan_loss(pred_fake, False))
        loss = self.regularise_discriminator(name, disc, real, pred_real, loss, losses)
        for kind, pred, is_real in (("real", pred_real, True), ("fake", pred_fake, False)):
            acc = discriminator_accuracy(pred, is_real, self.hparams.gan_mode)
            if acc is not None:
                losses[f"acc_{kind}_{name}"] = acc
        if self.hparams.gan_mode == "wgangp":
            with torch.autocast(self.device.type, enabled=False):  # second-order grads in fp32
                losses[f"gp_{name}"] = gradient_penalty(disc, real.float(), fake.float())
            loss = loss + self.hparams.lambda_gp * losses[f"gp_{name}"]
        losses[name] = loss

    def _check_finite_weights(self) -> None:
        """Refuse to save NaN/Inf weights: a poisoned checkpoint must never replace a good one."""
        for name, tensor in self.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NumericalError(
                    f"parameter {name} holds NaN/Inf at global step {self.global_step}; refusing to write a "
                    "checkpoint from it, so the earlier checkpoints stay as they were."
                )

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)  # the accumulation window (phases.py)
        if "skipped" in batch:  # images the loader could not read (data/, the bad-image policy)
            skipped = batch["skipped"].float().sum()
            self.log("data/skipped_images", skipped, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        apply_speed_levers(self, hp.get("channels_last", False), hp.get("compile_generators", False))

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
