"""The Hugging Face hub layout of a trained model: one folder any safetensors reader opens, with no pickle anywhere.

::

    <folder>/config.json         what to build: each generator's constructor (``_target_`` and every argument,
                                 channels included), the directions, the weights' kind (ema | trained), the pixel
                                 range, the training recipe, this package's version and FORMAT_VERSION
    <folder>/model.safetensors   the weights of every direction in one file, keys ``a2b.<key>`` / ``b2a.<key>``
    <folder>/README.md           the model card (written by ``inference.model_card``), optional

One weights file rather than one per direction: it is the file name the hub and its tools look for, a model is one
download with one hash, and a one-way model (CUT) simply holds no ``b2a.`` keys. A direction is loaded by its prefix.

The folder is written beside its final place and renamed into it (``write_pretrained_folder``), so a reader never
sees a half-written one. Reading (``read_pretrained_folder``) checks the marker and version before any tensor is
read; the generators are built and loaded strictly by ``checkpoints.generators.load_generators``.
``download_pretrained`` and ``upload_pretrained`` move such a folder to and from the hub with ``huggingface_hub``
(the optional extra ``hub``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from cyclegan_lightning.checkpoints.atomic import _fsync_dir
from cyclegan_lightning.errors import CheckpointError, ConfigError, OutputError

FORMAT = "cyclegan-lightning-pretrained"  # config.json's "format": the marker of this layout
FORMAT_VERSION = 1  # bump when the layout changes incompatibly; readers refuse newer versions
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "*.png"]  # what a download fetches (the card's sample grid too)


def package_version() -> str:
    try:
        return version("cyclegan-lightning")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def is_pretrained_folder(path: Path) -> bool:
    """A folder holding either file of the layout (a folder missing the other is reported by the reader)."""
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / WEIGHTS_FILE).is_file())


def read_pretrained_folder(folder: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(config, {direction: generator state dict}) of a folder in this layout; a ``CheckpointError`` naming the
    folder and what to do for a missing file, another format, a newer version or weights that do not match."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"model folder {folder} has no {name}. Copy or download the whole folder again (it needs "
                f"{CONFIG_FILE} and {WEIGHTS_FILE}), or export it anew: python export.py format=hf ..."
            )
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = f"{CONFIG_FILE} is not valid JSON ({exc})"
        raise CheckpointError(f"model folder {folder}: {reason}. Copy it again.") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f'model folder {folder}: {CONFIG_FILE} is not a cyclegan-lightning model (no "format": "{FORMAT}"). '
            "Give a folder written by export.py format=hf or Translator.save_pretrained."
        )
    found = config.get("format_version")
    if not isinstance(found, int) or found > FORMAT_VERSION:
        raise CheckpointError(
            f"model folder {folder} has format_version {found!r}, newer than this cyclegan-lightning reads "
            f"({FORMAT_VERSION}). Upgrade it: pip install -U cyclegan-lightning."
        )
    specs = config.get("generators")
    if not isinstance(specs, dict) or not specs or not all(isinstance(s, dict) for s in specs.values()):
        raise CheckpointError(f"model folder {folder}: {CONFIG_FILE} lists no generators. Export the model again.")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(folder / WEIGHTS_FILE, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"model folder {folder}: {WEIGHTS_FILE} is truncated or not a safetensors file ({exc}). Copy it again."
        ) from None
    states: dict[str, dict[str, torch.Tensor]] = {d: {} for d in specs}
    for key, tensor in flat.items():
        direction, _, rest = key.partition(".")
        if direction not in states:
            raise CheckpointError(
                f"model folder {folder}: {WEIGHTS_FILE} holds {key!r}, of no generator listed in {CONFIG_FILE} "
                f"({', '.join(specs)}). The two files are of different models; copy the folder again."
            )
        states[direction][rest] = tensor
    return config, states


def write_pretrained_folder(
    folder: str | Path,
    config: dict,
    states: dict[str, dict[str, torch.Tensor]],
    card: str | None = None,
    extra_files: dict[str, Path] | None = None,  # name in the folder -> file to copy there (the card's images)
) -> Path:
    """Write the layout to ``folder``: everything goes into a temporary folder beside it, which is then renamed into
    place (an existing folder is swapped out and removed only after), so ``folder`` is never half-written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output={folder} is a file; give a folder to write the model into.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": package_version(), **config}
    flat = {f"{d}.{k}": v.detach().to("cpu").contiguous() for d, state in states.items() for k, v in state.items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_file(flat, tmp / WEIGHTS_FILE, metadata={"format": "pt", "directions": ",".join(states)})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if card is not None:
            (tmp / CARD_FILE).write_text(card)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        _swap_into_place(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # disk full, permission denied: nothing was changed at ``folder``
            raise OutputError(f"cannot write the model folder {folder} ({exc}); nothing was changed there.") from None
        raise
    _fsync_dir(folder.parent)
    return folder


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing ``folder`` is renamed aside first and deleted once ``tmp`` is in."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, old / folder.name)
    try:
        os.replace(tmp, folder)
    except BaseException:
        if old is not None:
            os.replace(old / folder.name, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError(
            "loading from or pushing to the Hugging Face hub needs huggingface_hub: "
            "pip install 'cyclegan-lightning[hub]' (a local folder needs nothing more)"
        ) from None
    return huggingface_hub


def download_pretrained(repo_id: str, revision: str | None = None, offline: bool = False) -> Path:
    """The hub repository ``repo_id`` (``owner/name``) as a local folder in huggingface_hub's cache (its files in
    ``HUB_FILES`` only). ``offline``: the cached copy only, never the network. huggingface_hub's own settings
    (``HF_HUB_OFFLINE``, ``HF_HOME``, tokens) apply too."""
    hub = _hub()
    try:
        return Path(
            hub.snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=offline)
        )
    except Exception as exc:  # noqa: BLE001 -- network, auth, missing repo, not cached: all end as one line
        why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        raise CheckpointError(
            f"model {repo_id!r}: no such local folder, and "
            + ("downloads are off and the hub cache has no copy" if offline else "the hub download failed")
            + f" ({why}). Check the name and your network, or give a local folder."
        ) from None


def upload_pretrained(folder: Path, repo_id: str, private: bool = False, commit_message: str | None = None) -> str:
    """Create ``repo_id`` on the hub if needed and upload ``folder`` to it; returns the commit's URL. Needs a login
    (``hf auth login`` or ``HF_TOKEN``)."""
    hub = _hub()
    api = hub.HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message or "Upload cyclegan-lightning model"
    )
    return str(getattr(info, "commit_url", info))
