"""Rank the runs of a sweep: evaluate each run's best (or last) checkpoint and write a table with its overrides.

A run directory is what train.py writes: ``checkpoints/`` and, from Hydra, ``.hydra/{config,hydra,overrides}.yaml``.
A multirun directory holds one such directory per job (``0/``, ``1/``, ...).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cyclegan_lightning.errors import CycleGANError, DataError
from cyclegan_lightning.evaluation.evaluate import LOWER_IS_BETTER, METRIC_ORDER, evaluate, fmt, write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class RunEntry:
    run_dir: Path
    overrides: list[str]
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # flattened: "a2b/fid", ...
    error: str | None = None


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (those with a ``checkpoints/`` folder) in or under each path, up to 3 levels, in order."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"runs: {path} is not a folder. Give a multirun folder or run folders of train.py.")
        found = [path] if (path / "checkpoints").is_dir() else []
        for depth in ("*", "*/*", "*/*/*"):
            if found:
                break
            found = sorted((p.parent for p in path.glob(f"{depth}/checkpoints") if p.is_dir()), key=_natural)
        if not found:
            raise DataError(f"runs: no run folder (one with checkpoints/) in {path}.")
        runs += [r for r in found if r not in runs]
    return runs


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def read_overrides(run: Path) -> list[str]:
    file = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(file)] if file.is_file() else []


def pick_checkpoint(run: Path, which: str = "best") -> Path:
    """``best``: the ModelCheckpoint's best (recorded in last.ckpt, else the newest best-*.ckpt); ``last``: last.ckpt."""
    ckpts = run / "checkpoints"
    last = ckpts / "last.ckpt"
    if which == "best":
        if last.is_file():
            try:
                state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
                for key, value in state.get("callbacks", {}).items():
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


def run_test_folders(run: Path) -> tuple[str | None, str | None]:
    """The run's own test folders, from its saved Hydra config (interpolations resolved as in that run)."""
    cfg_file = run / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return None, None
    from cyclegan_lightning.config import register_resolvers

    register_resolvers()
    text = cfg_file.read_text()
    hydra_file = run / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():  # ${hydra:runtime.cwd} etc. take the values that run had
        hydra_node = OmegaConf.load(hydra_file).get("hydra", {})

        def lookup(m: re.Match) -> str:
            value = OmegaConf.select(hydra_node, m.group(1), throw_on_resolution_failure=False)
            return str(value) if value is not None else m.group(0)

        text = re.sub(r"\$\{hydra:([\w.]+)\}", lookup, text)
    cfg = OmegaConf.create(text)
    try:
        data = OmegaConf.to_container(cfg.data, resolve=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"run {run}: cannot resolve its data folders ({exc}); pass data_root=<folder with testA/ testB/>") from None
    root = data.get("root")
    test_a = data.get("test_a") or (f"{root}/testA" if root else None)
    test_b = data.get("test_b") or (f"{root}/testB" if root else None)
    if data.get("direction") == "BtoA":
        test_a, test_b = test_b, test_a
    return test_a, test_b


def build_leaderboard(
    runs: list[str | Path],
    translator_factory,  # path -> Translator
    extractor=None,
    checkpoint: str = "best",
    data_root: str | None = None,  # one test set for every run; default: each run's own
    rank_by: str = "auto",  # auto | <direction>/<metric> | <metric> (mean over directions)
    max_images: int | None = None,
    kid_subset_size: int = 1000,
    progress: bool = True,
) -> tuple[list[RunEntry], str]:
    """Evaluate every run; returns the entries sorted best first (failed runs last) and the ranking key."""
    entries = []
    for run in find_runs(runs):
        entry = RunEntry(run, read_overrides(run))
        try:
            entry.checkpoint = pick_checkpoint(run, checkpoint)
            test_a, test_b = (f"{data_root}/testA", f"{data_root}/testB") if data_root else run_test_folders(run)
            translator = translator_factory(entry.checkpoint)
            result = evaluate(translator, test_a, test_b, "both", extractor, max_images=max_images,
                              kid_subset_size=kid_subset_size, progress=progress)  # fmt: skip
            entry.metrics = {f"{d}/{k}": v for d, vals in result["metrics"].items() for k, v in vals.items()}
        except CycleGANError as exc:
            entry.error = str(exc)
            log.warning("run %s: %s", run, exc)
        entries.append(entry)
    key = _rank_key(entries, rank_by)
    lower = key.split("/")[-1] in LOWER_IS_BETTER

    def score(e: RunEntry):
        v = _value(e, key)
        if v is None:
            return (1, 0.0)
        return (0, v if lower else -v)

    return sorted(entries, key=score), key


def _value(entry: RunEntry, key: str) -> float | None:
    if "/" in key:
        return entry.metrics.get(key)
    vals = [v for k, v in entry.metrics.items() if k.split("/")[1] == key]
    return sum(vals) / len(vals) if vals else None


def _rank_key(entries: list[RunEntry], rank_by: str) -> str:
    if rank_by != "auto":
        return rank_by
    have = {k.split("/")[1] for e in entries for k in e.metrics}
    return "fid" if "fid" in have else "cycle_psnr"


def _columns(entries: list[RunEntry]) -> list[str]:
    keys = {k for e in entries for k in e.metrics if not k.endswith("n_images")}
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    return sorted(keys, key=lambda k: (order.get(k.split("/")[1], 99), k))


def to_markdown(entries: list[RunEntry], key: str) -> str:
    cols = _columns(entries)
    better = "lower" if key.split("/")[-1] in LOWER_IS_BETTER else "higher"
    common = set.intersection(*(set(e.overrides) for e in entries)) if len(entries) > 1 else set()
    lines = [f"Ranked by {key} ({better} is better)."]
    if common:  # show what differs; what all runs share is listed once
        lines.append("Overrides common to all runs: " + " ".join(f"`{o}`" for o in entries[0].overrides if o in common))
    lines += ["",
             "| rank | run | overrides | " + " | ".join(cols) + " | checkpoint |",
             "|---" * (len(cols) + 4) + "|"]  # fmt: skip
    for i, e in enumerate(entries, 1):
        over = " ".join(f"`{o}`" for o in e.overrides if o not in common) or "(defaults)"
        if e.error:
            lines.append(f"| - | {e.run_dir.name} | {over} | " + " | ".join("" for _ in cols) + f" | error: {e.error} |")
            continue
        ckpt = e.checkpoint.name if e.checkpoint else ""
        lines.append(f"| {i} | {e.run_dir.name} | {over} | " + " | ".join(fmt(e.metrics.get(c)) for c in cols) + f" | {ckpt} |")
    return "\n".join(lines) + "\n"


def to_csv(entries: list[RunEntry], key: str) -> str:
    cols = _columns(entries)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "run_dir", "overrides", *cols, "checkpoint", "error"])
    for i, e in enumerate(entries, 1):
        writer.writerow([
            "" if e.error else i, str(e.run_dir), " ".join(e.overrides),
            *[e.metrics.get(c, "") for c in cols], str(e.checkpoint or ""), e.error or "",
        ])  # fmt: skip
    return buf.getvalue()


def write_leaderboard(entries: list[RunEntry], key: str, output_dir: str | Path) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    md, csv_path = output_dir / "leaderboard.md", output_dir / "leaderboard.csv"
    write_text_atomic(md, to_markdown(entries, key))
    write_text_atomic(csv_path, to_csv(entries, key))
    return md, csv_path
