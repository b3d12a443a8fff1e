"""Checkpoints from strangers: read without running pickled code, and check they fit before anything uses them.

- Every load is ``torch.load(..., weights_only=True)``, passed explicitly (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
  only changes loads that leave it unset): a checkpoint whose pickle names any global outside torch's allow-list
  (``os.system``, ``subprocess.Popen``, ...) is refused before a single opcode of it runs, with a
  ``CheckpointError`` that says why.
- ``check_compatible`` refuses a checkpoint written by a newer checkpoint format (``checkpoint["cyclegan_lightning"]
  ["format"]``), one not written by ``CycleGAN``, and one whose networks differ from the model being loaded into
  (another generator, block count, width or channel count), naming what differs instead of a key dump.

``CycleGAN.load_from_checkpoint``, resuming (``run_training``: ``ckpt_path``) and ``predict.py`` all go through
these rules.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan_lightning.errors import CheckpointError

NETWORKS = ("gen_a2b", "gen_b2a", "disc_a", "disc_b")


def safe_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True``; any failure becomes a ``CheckpointError`` naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {path} is empty (0 bytes). Copy it again or use another one.")
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not (mmap and "mmap" in str(exc)):
                raise
            return torch.load(path, map_location=map_location, weights_only=True)  # legacy (non-zip) file
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: no such file.") from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text or "Unsupported operand" in text:
            found = text.split("Unsupported global:", 1)[-1].split("was not")[0].strip() if "global:" in text else ""
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds pickled Python objects{f' ({found})' if found else ''}, "
                "and loading them could run arbitrary code. Nothing from it was executed. Only use checkpoints "
                "from sources you trust; a checkpoint written by train.py never contains such objects."
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt ({text[:200]}). Copy it again.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).split("\n")[0][:200] or type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or not a PyTorch file ({reason}).") from None


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
    """Raise ``CheckpointError`` unless ``checkpoint`` is a CycleGAN checkpoint this version reads into ``model``."""
    from cyclegan_lightning.module import CHECKPOINT_FORMAT  # late: module imports this file

    where = f"checkpoint {path}" if path else "the checkpoint"
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{where} is not a Lightning checkpoint (no state_dict). Give a .ckpt from train.py.")
    meta = checkpoint.get("cyclegan_lightning")
    if not isinstance(meta, dict) or "format" not in meta:
        raise CheckpointError(
            f"{where} was not written by cyclegan_lightning's CycleGAN (no checkpoint format marker). Give a .ckpt "
            "from train.py; reference *_net_G*.pth files load with predict.py."
        )
    fmt = meta["format"]
    if not isinstance(fmt, int) or fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{where} has checkpoint format {fmt!r}, newer than this cyclegan-lightning reads (format "
            f"{CHECKPOINT_FORMAT}). Upgrade cyclegan-lightning (pip install -U cyclegan-lightning) to load it."
        )
    expected = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in NETWORKS}
    state = {k.replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()}
    expected = {k.replace("_orig_mod.", ""): v for k, v in expected.items()}
    state = {k: v for k, v in state.items() if k.split(".", 1)[0] in NETWORKS}
    parts = state_mismatch(expected, state)
    if parts:
        saved = checkpoint.get("hyper_parameters") or {}
        ours = dict(getattr(model, "hparams", {}) or {})
        raise CheckpointError(
            f"{where} holds a different architecture: {'; '.join(parts)}.\n  checkpoint: {_describe_networks(saved)}"
            f"\n  this model: {_describe_networks(ours)}\nUse the model config the checkpoint was trained with "
            "(model/generator=..., model.generator.ngf=..., data.channels_a/b=...)."
        )
