"""The checkpoint format: its version marker, and whether a checkpoint fits the model it is loaded into.

- ``check_format`` is the one format rule, applied by every reader of our ``.ckpt`` files: ``on_load_checkpoint``
  of every model (resume, ``load_from_checkpoint``) and ``load_generators`` (prediction, export, evaluation). It
  refuses a file without the marker (``checkpoint["cyclegan_lightning"]["format"]``) or with a newer format.
- ``check_compatible`` adds the architecture: it refuses a checkpoint whose networks differ from the model being
  loaded into (another generator, block count, width or channel count), naming what differs instead of a key dump.
- ``ema_state_prefix``: where a model's generator averages sit in the state dict, for the readers that pick them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cyclegan_lightning.errors import CheckpointError

CHECKPOINT_FORMAT = 2  # bump when the layout changes incompatibly (2: image pools stored per DDP rank)
MARKER = "cyclegan_lightning"  # checkpoint[MARKER] = {"format": CHECKPOINT_FORMAT, "model": class name}
COMPILED_PREFIX = "_orig_mod."  # what torch.compile(module) puts into state-dict keys
EMA_PREFIX = "gen_ema."  # state-dict prefix of the generators' averages (models/ema.py): gen_ema.a2b.module.<keys>


def ema_state_prefix(direction: str) -> str:
    """Where the average of the ``direction`` generator's weights sits in a checkpoint's state dict (readers pick
    it over the live weights when its update count, ``gen_ema.<direction>.n_averaged``, is above 0)."""
    return f"{EMA_PREFIX}{direction}.module."


def format_marker(model: nn.Module) -> dict:
    """What ``on_save_checkpoint`` stores under ``checkpoint[MARKER]``."""
    return {"format": CHECKPOINT_FORMAT, "model": type(model).__name__}


def check_format(checkpoint: object, where: str) -> dict:
    """Raise ``CheckpointError`` unless ``checkpoint`` is a Lightning checkpoint of ours in a format this version
    reads; return its marker."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{where} is not a Lightning checkpoint (no state_dict). Give a .ckpt from train.py.")
    meta = checkpoint.get(MARKER)
    if not isinstance(meta, dict) or "format" not in meta:
        raise CheckpointError(
            f"{where} was not written by cyclegan_lightning (no checkpoint format marker). Give a .ckpt from "
            "train.py; reference *_net_G*.pth files load with predict.py."
        )
    fmt = meta["format"]
    if not isinstance(fmt, int) or fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{where} has checkpoint format {fmt!r}, newer than this cyclegan-lightning reads (format "
            f"{CHECKPOINT_FORMAT}). Upgrade cyclegan-lightning (pip install -U cyclegan-lightning) to load it."
        )
    return meta


def strip_compiled_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State-dict keys as an uncompiled module has them (``torch.compile`` inserts ``_orig_mod.``)."""
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in state.items()}


def _describe_networks(hparams: dict) -> str:
    gen, disc = hparams.get("generator") or {}, hparams.get("discriminator") or {}

    def spec(d: dict) -> str:
        name = str(d.get("_target_", "?")).rsplit(".", 1)[-1]
        return name + "(" + ", ".join(f"{k}={v}" for k, v in d.items() if k != "_target_") + ")"

    return (
        f"generator {spec(gen)}, discriminator {spec(disc)}, channels A={hparams.get('channels_a', '?')} "
        f"B={hparams.get('channels_b', '?')}"
    )


def state_mismatch(expected: dict, state: dict) -> list[str]:
    """Short description of how ``state`` differs from ``expected`` (missing, unexpected, reshaped keys), instead
    of PyTorch's full key listing; empty when they match."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
    return parts


def check_compatible(model: nn.Module, checkpoint: dict, path: str | Path | None = None) -> None:
    """Raise ``CheckpointError`` unless ``checkpoint`` is one of ours, in a format this version reads, whose networks
    (``model.network_names``) have exactly the keys and shapes of ``model``'s."""
    where = f"checkpoint {path}" if path else "the checkpoint"
    check_format(checkpoint, where)
    networks = tuple(model.network_names)

    def of_networks(state: dict) -> dict:
        return {k: v for k, v in strip_compiled_prefix(state).items() if k.split(".", 1)[0] in networks}

    parts = state_mismatch(of_networks(model.state_dict()), of_networks(checkpoint["state_dict"]))
    if parts:
        saved = checkpoint.get("hyper_parameters") or {}
        ours = dict(getattr(model, "hparams", {}) or {})
        raise CheckpointError(
            f"{where} holds a different architecture: {'; '.join(parts)}.\n  checkpoint: {_describe_networks(saved)}"
            f"\n  this model: {_describe_networks(ours)}\nUse the model config the checkpoint was trained with "
            "(model=..., model/generator=..., model.generator.ngf=..., data.channels_a/b=...)."
        )
