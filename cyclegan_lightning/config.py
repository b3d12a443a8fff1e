"""OmegaConf resolvers used by the configs in ``conf/``; registered once by ``register_resolvers()``."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from cyclegan_lightning.hardware import bf16_where_native


def amp_if_gpu() -> str:
    """Lightning precision: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true on CPU."""
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def register_resolvers() -> None:
    """``${add:a,b}`` (e.g. max_epochs = n_epochs + n_epochs_decay), ``${amp_if_gpu:}`` and
    ``${bf16_where_native:<accelerator>}`` (bf16-mixed unless the CPU would emulate it: see ``hardware``)."""
    if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *xs: sum(xs))
    if not OmegaConf.has_resolver("amp_if_gpu"):
        OmegaConf.register_new_resolver("amp_if_gpu", amp_if_gpu)
    if not OmegaConf.has_resolver("bf16_where_native"):
        OmegaConf.register_new_resolver("bf16_where_native", bf16_where_native)
