"""fp16 AMP's one piece of bookkeeping under manual optimization: the optimizers of a GAN share one GradScaler.

Each optimizer step updates the scaler (it grows every ``growth_interval`` clean steps and halves on an overflow), so
gradients that another optimizer already holds, at the old scale, would be unscaled with the new one. They are
brought to the new scale around the step (a power of two: exact). Such gradients exist under gradient accumulation
(a window's earlier batches) and where one backward feeds two optimizers (CUT's G and F).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from lightning import Trainer


@contextlib.contextmanager
def loss_scale_kept(trainer: Trainer | None, others: Iterable[torch.optim.Optimizer]) -> Iterator[None]:
    """Around one optimizer step: rescale the gradients ``others`` hold if the step changed the shared loss scale.
    Does nothing without an enabled GradScaler (fp32, bf16)."""
    scaler = getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None
    if scaler is None or not scaler.is_enabled():
        yield
        return
    before = scaler.get_scale()
    yield
    after = scaler.get_scale()
    if after != before:
        for opt in others:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(after / before)
