"""Reading what train.py left in a run folder: its checkpoints (best and last, with their epochs), its test and
ground-truth folders, its overrides and its CSV metrics. Shared by evaluate.py, the leaderboard and the model card
(on the ground floor so that inference, which writes model cards, and evaluation can both read runs).

A run directory holds ``checkpoints/`` (``best.ckpt`` and ``last.ckpt``; runs before them ``best-epochNNNN.ckpt``),
``csv/metrics.csv`` and, from Hydra, ``.hydra/{config,hydra,overrides}.yaml``. A multirun directory holds one run
directory per job (``0/``, ``1/``, ...).
"""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cyclegan_lightning.errors import DataError
from cyclegan_lightning.run_layout import RunLayout

CHECKPOINTS = ("best", "last")


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (those with a ``checkpoints/`` folder) in or under each path, up to 3 levels, in order."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"runs: {path} is not a folder. Give a multirun folder or run folders of train.py.")
        found = [path] if RunLayout(path).is_run() else []
        for depth in ("*", "*/*", "*/*/*"):
            if found:
                break
            found = sorted(
                (p.parent for p in path.glob(f"{depth}/{RunLayout.CHECKPOINTS}") if p.is_dir()), key=_natural
            )
        if not found:
            raise DataError(f"runs: no run folder (one with checkpoints/) in {path}.")
        runs += [r for r in found if r not in runs]
    return runs


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def run_of(path: str | Path) -> Path | None:
    """The run folder of a checkpoint file or of a folder given as a run (or its ``checkpoints/``), else None."""
    path = Path(path)
    for cand in [path, path.parent] if path.is_dir() else [path.parent.parent]:
        if RunLayout(cand).is_run():
            return cand
    return None


def read_overrides(run: Path) -> list[str]:
    file = RunLayout(run).overrides
    return [str(o) for o in OmegaConf.load(file)] if file.is_file() else []


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def pick_checkpoint(run: Path, which: str = "best") -> Path:
    """``last``: ``last.ckpt``. ``best``: ``best.ckpt``; in older runs the ModelCheckpoint's best as recorded in
    ``last.ckpt``, else the newest ``best-*.ckpt``; ``last.ckpt`` when the run kept no best."""
    if which not in CHECKPOINTS:
        raise DataError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
    layout = RunLayout(run)
    ckpts, last = layout.checkpoints, layout.last
    if which == "best":
        if layout.best.is_file():
            return layout.best
        if last.is_file():
            try:
                for key, value in _load(last).get("callbacks", {}).items():
                    if key.startswith("ModelCheckpoint") and value.get("best_model_path"):
                        best = ckpts / Path(value["best_model_path"]).name  # the run may have moved
                        if best.is_file():
                            return best
            except Exception:  # noqa: BLE001 -- an unreadable last.ckpt is reported when it is evaluated
                pass
        bests = sorted(ckpts.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        if bests:
            return bests[-1]
    if last.is_file():
        return last
    any_ckpt = sorted(ckpts.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not any_ckpt:
        raise DataError(f"run {run}: no .ckpt in {ckpts}")
    return any_ckpt[-1]


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch a Lightning checkpoint was saved at, 1-based like the sample grids (``epoch_0003.png``); None
    for files without one (reference generators) or that cannot be read (their evaluation says why)."""
    try:
        epoch = _load(Path(path)).get("epoch")
    except Exception:  # noqa: BLE001
        return None
    return int(epoch) + 1 if isinstance(epoch, int) else None


def checkpoint_epochs(run: Path) -> dict[str, int]:
    """``{"best" | "last": epoch (1-based)}`` for the checkpoints the run has and whose epoch is known."""
    out = {}
    for which in ("best", "last"):
        try:
            epoch = checkpoint_epoch(pick_checkpoint(run, which))
        except DataError:  # the run has no such checkpoint
            continue
        if epoch is not None:
            out[which] = epoch
    return out


def read_metrics_by_epoch(run: Path, prefix: str = "") -> dict[int, dict[str, float]]:
    """``{epoch (1-based): {metric: value}}`` of the metrics named ``prefix...`` in the run's ``csv/metrics.csv``
    (the last value of each epoch)."""
    file = RunLayout(run).metrics_csv
    if not file.is_file():
        return {}
    out: dict[int, dict[str, float]] = {}
    with open(file, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if epoch in (None, ""):
                continue
            values = out.setdefault(int(float(epoch)) + 1, {})
            for metric, value in row.items():
                if metric not in ("epoch", "step") and metric.startswith(prefix) and value not in (None, ""):
                    values[metric] = float(value)
    return {epoch: values for epoch, values in out.items() if values}


def read_metric_by_epoch(run: Path, metric: str) -> dict[int, float]:
    """``{epoch (1-based): value}`` of ``metric`` in the run's ``csv/metrics.csv`` (last value of each epoch)."""
    return {epoch: values[metric] for epoch, values in read_metrics_by_epoch(run, metric).items() if metric in values}


def data_folders(
    root: str | Path | None, test_a=None, test_b=None, paired_a=None, paired_b=None
) -> dict[str, str | None]:
    """``test_a``/``test_b`` (default ``root/testA``, ``root/testB``) and the ground truth of their translations:
    ``paired_b`` (B of each test A image, default ``root/truthB`` when it exists) and ``paired_a`` (``root/truthA``)."""
    r = Path(root) if root else None
    return {
        "test_a": test_a or (str(r / "testA") if r else None),
        "test_b": test_b or (str(r / "testB") if r else None),
        "paired_a": paired_a or (str(r / "truthA") if r and (r / "truthA").is_dir() else None),
        "paired_b": paired_b or (str(r / "truthB") if r and (r / "truthB").is_dir() else None),
    }


def run_test_folders(run: Path) -> dict[str, str | None]:
    """The run's own test (and ground-truth) folders, from its saved Hydra config, as in ``data_folders``."""
    cfg_file = run / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return data_folders(None)
    from cyclegan_lightning.config import register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(cfg_file)
    try:
        with hydra_config_of(run):  # ${hydra:runtime.cwd} etc. take the values that run had
            data = OmegaConf.to_container(cfg.data, resolve=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"run {run}: cannot resolve its data folders ({exc}); pass data_root=<folder with testA/ testB/>"
        ) from None
    folders = data_folders(data.get("root"), data.get("test_a"), data.get("test_b"))
    if data.get("direction") == "BtoA":  # the run's A is the folder's B
        folders = {
            "test_a": folders["test_b"],
            "test_b": folders["test_a"],
            "paired_a": folders["paired_b"],
            "paired_b": folders["paired_a"],
        }
    return folders


@contextlib.contextmanager
def hydra_config_of(run: Path) -> Iterator[None]:
    """Resolve ``${hydra:...}`` with the values of ``run`` (its ``.hydra/hydra.yaml``) instead of this process's:
    Hydra's own resolver reads ``HydraConfig``, which is swapped in for the block and restored after it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals

    hydra_file = run / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        yield
        return
    setup_globals()  # registers the ${hydra:} resolver, as a Hydra app does at start
    instance = HydraConfig.instance()
    saved = instance.cfg
    instance.cfg = OmegaConf.create({"hydra": OmegaConf.load(hydra_file).get("hydra", {})})
    try:
        yield
    finally:
        instance.cfg = saved
