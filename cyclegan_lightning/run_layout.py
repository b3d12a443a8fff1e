"""The one description of a training run's folder, for everything that writes or reads it (train.py's callbacks,
resume, evaluate, leaderboard, plot, export's default output):

    <run>/checkpoints/last.ckpt   newest, for resuming       <run>/samples/epoch_NNNN.png, latest.png
    <run>/checkpoints/best.ckpt   best by val/swd            <run>/plots/curves.png
    <run>/csv/metrics.csv         the CSV logger's metrics   <run>/.hydra/ config and overrides

``conf/callbacks/default.yaml`` and ``conf/logger/csv.yaml`` name the same folders for the callbacks they build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths inside the run folder ``root``."""

    root: Path

    CHECKPOINTS = "checkpoints"
    LAST = "last.ckpt"
    BEST = "best.ckpt"
    SAMPLES = "samples"
    PLOTS = "plots"
    CSV = "csv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> RunLayout | None:
        """The run a checkpoint file sits in (``<run>/checkpoints/x.ckpt``), else None."""
        path = Path(path)
        return cls(path.parent.parent) if path.parent.name == cls.CHECKPOINTS else None

    def is_run(self) -> bool:
        return self.checkpoints.is_dir()

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / self.LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / self.BEST

    @property
    def samples(self) -> Path:
        return self.root / self.SAMPLES

    @property
    def curves(self) -> Path:
        return self.root / self.PLOTS / "curves.png"

    @property
    def metrics_csv(self) -> Path:
        return self.root / self.CSV / "metrics.csv"

    @property
    def overrides(self) -> Path:
        return self.root / ".hydra" / "overrides.yaml"
