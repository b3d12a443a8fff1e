"""Read checkpoint files from strangers without running pickled code: every load here is ``weights_only=True``.

``weights_only=True`` is passed explicitly (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` only changes loads that leave
it unset): a checkpoint whose pickle names any global outside torch's allow-list (``os.system``,
``subprocess.Popen``, ...) is refused before a single opcode of it runs, with a ``CheckpointError`` that says why.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cyclegan_lightning.errors import CheckpointError


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
