"""A GAN's training step in phases, as the papers write it: each phase computes its losses, back-propagates their
total and steps its optimizers (the reference's ``optimize_parameters``: G with D frozen, then D).

``optimize(group, losses, *optimizers)`` is one phase; all the bookkeeping manual optimization needs lives here so
that a model's ``training_step`` reads like the paper:

- gradient accumulation (``accumulate_grad_batches`` = k): a window of k batches opens with every optimizer's
  gradients cleared (``on_train_batch_start``), each backward adds ``loss / k``, and the optimizers step at the
  window's close (every k-th batch and the epoch's last one, so a short last window still steps);
- DDP: gradients are all-reduced only in the backward passes of a stepping batch (``no_sync`` on the others);
- fp16 AMP: each step keeps the loss scale of the gradients the other optimizers hold (``loss_scale.py``);
- the non-finite policy: every loss is checked before backward (one device sync, the same decision on every
  rank), and a bad one stops the run (``NumericalError``) or skips the phase (``nonfinite_policy=skip``);
- gradient clipping (``gradient_clip_val``) after AMP unscaling, and the stabilisers' hook after each step
  (``after_optimizer_step``: the generators' EMA, ADA's probability).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cyclegan_lightning.errors import NumericalError
from cyclegan_lightning.models.loss_scale import loss_scale_kept

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_NONFINITE = 20  # nonfinite_policy=skip still stops after this many bad batches in a row


@dataclass
class Window:
    """Where the current batch stands in its accumulation window."""

    batch_idx: int  # the batch's index in the epoch (named in a non-finite error)
    stepping: bool  # the batch closes the window: the optimizers step after its backward passes
    images: int  # images seen since the window opened, this batch's included (ADA counts them per step)
    finite: bool = True  # no phase of this batch met a non-finite loss


class PhasedOptimization:
    """Mixin for a LightningModule with ``automatic_optimization = False`` whose batches are dicts of image batches
    (``batch["a"]``). Reads ``accumulate_grad_batches``, ``nonfinite_policy`` and ``gradient_clip_val``."""

    _nonfinite_in_a_row = 0
    _window: Window | None = None

    # ---- one phase ------------------------------------------------------------------------------------------------
    def optimize(self, group: str, losses: dict[str, torch.Tensor], *optimizers) -> bool:
        """One phase: check ``losses``, back-propagate their ``total`` and, at the window's close, step
        ``optimizers`` in order, then call ``after_optimizer_step(group, images)`` (the stabilisers' hook). ``group``
        (``g`` | ``d``) names the losses in a non-finite message. Returns False, having back-propagated nothing, when
        a loss is not finite under ``nonfinite_policy=skip``."""
        window = self._window
        if not self.losses_finite(losses, group, window.batch_idx):
            window.finite = False
            return False
        self.backward_scaled(losses["total"], window.stepping)
        if window.stepping:
            for opt in optimizers:
                others = [o for o in self.trainer.optimizers if o is not opt.optimizer]
                with loss_scale_kept(self._trainer, others):
                    opt.step()
            self.after_optimizer_step(group, window.images)
        return True

    def after_optimizer_step(self, group: str, images: int) -> None:
        """After phase ``group`` stepped on ``images`` images (the stabilisers override it)."""

    @staticmethod
    @contextlib.contextmanager
    def frozen(*networks: nn.Module) -> Iterator[None]:
        """Inside: ``networks`` get no gradients (a discriminator in the generators' phase); gradients still flow
        through them to the networks before them."""
        for net in networks:
            net.requires_grad_(False)
        try:
            yield
        finally:
            for net in networks:
                net.requires_grad_(True)

    # ---- the accumulation window ----------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        k = self.hparams.get("accumulate_grad_batches", 1)
        images = len(batch["a"])
        if batch_idx % k == 0:  # a window opens (k=1: every batch): no gradient of an earlier window is left
            for opt in self.trainer.optimizers:
                opt.zero_grad(set_to_none=True)
        elif self._window is not None:  # (None: a run resumed inside a window)
            images += self._window.images
        self._window = Window(batch_idx, self.closes_accumulation_window(batch_idx), images)

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        if self._window.finite:  # the count of non-finite batches in a row starts again
            self._nonfinite_in_a_row = 0

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

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # runs after AMP unscaling, so the clip threshold applies to true gradients
        if self.hparams.get("gradient_clip_val"):
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)

    # ---- the non-finite policy ------------------------------------------------------------------------------------
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
