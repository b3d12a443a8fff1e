"""The run's ``csv/metrics.csv`` across a resume: a run interrupted and resumed ends with the log of an uninterrupted
run (every row once, same columns, same values), which the curves and the per-epoch readers read; and the writer's
own rules (a fresh run replaces an old file, new keys widen the header atomically)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import compose_train_cfg, make_dataset
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cyclegan_lightning import runs
from cyclegan_lightning.evaluation.plotting import plot_metrics, read_metrics
from cyclegan_lightning.run_layout import RunLayout
from cyclegan_lightning.training import resume
from cyclegan_lightning.training.csv_log import ResumableCSVLogger
from cyclegan_lightning.training.run import run_training

# 2 epochs of 2 batches, a row for every batch; every epoch also saved as checkpoints/e<epoch>.ckpt
RUN = [
    "logger=csv",
    "model.pool_size=2",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "+callbacks.every_epoch._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.every_epoch.dirpath=${paths.output_dir}/checkpoints",
    "+callbacks.every_epoch.filename='e{epoch}'",
    "+callbacks.every_epoch.save_top_k=-1",
    "+callbacks.every_epoch.monitor=step",  # a state key of its own, beside last.ckpt's ModelCheckpoint
    "+callbacks.every_epoch.mode=max",
    "+callbacks.every_epoch.auto_insert_metric_name=false",
    *("~callbacks.sample_grid", "~callbacks.plot_curves", "~callbacks.health_monitor"),  # log nothing to the CSV
]


def _rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(RunLayout(run).metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _train(data: Path, out: Path, *overrides: str) -> None:
    run_training(compose_train_cfg([f"data.root={data}", *RUN, *overrides], out))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, run folder) of the uninterrupted run every resumed one must match."""
    tmp = tmp_path_factory.mktemp("straight")
    data = make_dataset(tmp / "data")
    _train(data, tmp / "run")
    return data, tmp / "run"


def _assert_same_log(run: Path, reference: Path) -> None:
    header, rows = _rows(run)
    ref_header, ref_rows = _rows(reference)
    assert header == ref_header
    assert [(r["epoch"], r["step"]) for r in rows] == [(r["epoch"], r["step"]) for r in ref_rows]
    assert rows == ref_rows  # every value: the resume is bitwise exact on CPU, so are its losses and metrics


def test_sigterm_mid_epoch_then_auto_resume_into_the_same_folder_keeps_the_whole_log(
    straight, tmp_path: Path, monkeypatch
):
    """SIGTERM after batch 1 of epoch 2; ``ckpt_path=auto`` resumes into the same folder. The log holds the rows of
    both parts once each, as the uninterrupted run's; the curves, the per-epoch readers (model card, leaderboard)
    and the checkpoints' epochs agree with it."""
    data, reference = straight
    monkeypatch.delenv(resume.RESOLVED_ENV, raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    run = tmp_path / "outputs" / "demo" / "runs" / "1"  # where ckpt_path=auto of experiment demo looks
    sigterm = ["+callbacks.sigterm._target_=probes.SigtermAfter", "+callbacks.sigterm.epoch=1"]
    with pytest.raises(SIGTERMException):
        _train(data, run, *sigterm, "+callbacks.sigterm.batch=1")
    assert [r["step"] for r in _rows(run)[1]][-1] == "2"  # the first part logged up to its 3rd batch
    _train(data, run, f"paths.log_dir={tmp_path / 'outputs'}", "ckpt_path=auto")
    _assert_same_log(run, reference)

    assert read_metrics(RunLayout(run).metrics_csv) == read_metrics(RunLayout(reference).metrics_csv)  # plot.py's
    assert plot_metrics(RunLayout(run).metrics_csv, tmp_path / "curves.png").stat().st_size > 0
    swd = runs.read_metric_by_epoch(run, "val/swd")
    assert sorted(swd) == [1, 2] and swd == runs.read_metric_by_epoch(reference, "val/swd")
    assert runs.checkpoint_epochs(run)["last"] == 2
    assert not list(RunLayout(run).metrics_csv.parent.glob(".metrics.csv.*"))  # no temporary file left


def test_resume_from_an_older_checkpoint_drops_the_rows_it_redoes(straight, tmp_path: Path):
    """The finished run's folder resumed from its end-of-epoch-1 checkpoint (as after a SIGKILL that left later rows
    on disk): epoch 2's rows are logged again, not twice, and epoch 1's learning rate, which Lightning logs just
    after that checkpoint and the resumed run does not log again, stays."""
    data, reference = straight
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    _train(data, run, f"ckpt_path={run / 'checkpoints' / 'e0.ckpt'}")
    _assert_same_log(run, reference)
    assert [r["epoch"] for r in _rows(run)[1] if r["train/lr"]] == ["0", "1"]


def test_sigterm_after_the_last_batch_of_an_epoch_keeps_that_batch_row(straight, tmp_path: Path):
    """SIGTERM after the last batch of epoch 1, before its end-of-epoch hooks: that checkpoint's logger step is one
    behind (Lightning adds the batch on restart), so only the row count saved in the checkpoint keeps the batch's
    row. Every batch's row is there once, as in the uninterrupted run. (Lightning's resume from this point runs
    epoch 1's end without its validation and without the epoch's aggregates, so those values are not logged.)"""
    data, reference = straight
    run = tmp_path / "run"
    sigterm = ["+callbacks.sigterm._target_=probes.SigtermAfter", "+callbacks.sigterm.epoch=0"]
    with pytest.raises(SIGTERMException):
        _train(data, run, *sigterm, "+callbacks.sigterm.batch=2")
    _train(data, run, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")

    def batch_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [r for r in rows if r["train/g/total"]]

    assert len(batch_rows(_rows(run)[1])) == 4
    assert batch_rows(_rows(run)[1]) == batch_rows(_rows(reference)[1])
    assert [r["epoch"] for r in _rows(run)[1] if r["train/lr"]] == ["0", "1"]


def test_resume_into_a_new_folder_starts_with_the_log_up_to_the_checkpoint(straight, tmp_path: Path):
    """Resumed into another folder (Hydra's new timestamped folder) from the first run's checkpoint: the new folder's
    log holds the whole history too; the first run's log is left as it was."""
    data, reference = straight
    first = tmp_path / "first"
    shutil.copytree(reference, first)
    before = RunLayout(first).metrics_csv.read_bytes()
    _train(data, tmp_path / "second", f"ckpt_path={first / 'checkpoints' / 'e0.ckpt'}")
    _assert_same_log(tmp_path / "second", reference)
    assert RunLayout(first).metrics_csv.read_bytes() == before


def _logger(run: Path) -> ResumableCSVLogger:
    return ResumableCSVLogger(save_dir=run, name="csv", version="")


def test_a_run_that_does_not_resume_replaces_an_old_log_as_lightning_does(tmp_path: Path):
    old = _logger(tmp_path)
    old.log_metrics({"train/loss": 1.0}, step=0)
    old.save()
    new = _logger(tmp_path)  # the same folder, no checkpoint loaded
    new.log_metrics({"val/swd": 0.5}, step=0)
    new.save()
    assert _rows(tmp_path) == (["step", "val/swd"], [{"step": "0", "val/swd": "0.5"}])


def test_new_keys_after_a_resume_widen_the_header_and_keep_every_row(tmp_path: Path):
    first = _logger(tmp_path)
    for step in range(4):
        first.log_metrics({"train/loss": float(step)}, step=step)
        first.save()
    first_rows = first.rows_written
    resumed = _logger(tmp_path)
    resumed.continue_from(tmp_path / "checkpoints" / "last.ckpt", rows=2, before_step=None)  # saved after 2 rows
    assert resumed.rows_written == 2
    resumed.log_metrics({"train/loss": 9.0, "val/new": 1.0}, step=2)  # a key the first part never logged
    resumed.save()
    header, rows = _rows(tmp_path)
    assert first_rows == 4 and header == ["step", "train/loss", "val/new"]
    assert rows == [
        {"step": "0", "train/loss": "0.0", "val/new": ""},
        {"step": "1", "train/loss": "1.0", "val/new": ""},
        {"step": "2", "train/loss": "9.0", "val/new": "1.0"},
    ]
    assert resumed.rows_written == 3


def test_a_failed_header_rewrite_leaves_the_previous_log(tmp_path: Path, monkeypatch):
    """New keys make the writer write the whole file again: a crash or a full disk in the middle of it leaves the
    previous file whole (Lightning's writer truncates it first)."""
    logger = _logger(tmp_path)
    for step in range(3):
        logger.log_metrics({"train/loss": float(step)}, step=step)
        logger.save()
    before = RunLayout(tmp_path).metrics_csv.read_bytes()

    def disk_full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    logger.log_metrics({"val/swd": 0.5}, step=3)
    with pytest.raises(OSError, match="No space"):
        logger.save()
    assert RunLayout(tmp_path).metrics_csv.read_bytes() == before
    assert sorted(p.name for p in RunLayout(tmp_path).metrics_csv.parent.iterdir()) == ["metrics.csv"]
