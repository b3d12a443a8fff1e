"""End to end on the real config: the demo trains, writes a checkpoint and a sample grid, and loads back."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.run_layout import RunLayout
from cyclegan_lightning.training.run import run_training


def test_tiny_run_writes_checkpoint_grid_and_logs(train_cfg, tmp_path: Path):
    cfg = train_cfg("trainer.max_epochs=2")
    metrics = run_training(cfg)
    run = RunLayout(cfg.paths.output_dir)  # the one description of the folder, which every reader uses
    assert run.last.is_file() and run.best.is_file() and run.curves.is_file()
    assert sorted(p.name for p in run.samples.glob("epoch_*.png")) == ["epoch_0001.png", "epoch_0002.png"]
    assert run.metrics_csv.read_text().count("val/cycle") >= 1
    assert 0.0 < metrics["val/cycle"] < 2.0  # L1 between images in [-1, 1]
    hparams = yaml.safe_load((run.metrics_csv.parent / "hparams.yaml").read_text())
    assert hparams["model"]["lambda_cycle"] == 10.0  # the whole resolved config, logged once by run_training ...
    assert "lambda_cycle" not in hparams  # ... and not a second time, flat, by Lightning from the module

    model = CycleGAN.load_from_checkpoint(run.last, map_location="cpu")  # weights_only
    x = torch.rand(1, 3, 30, 30) * 2 - 1
    assert model(x, "a2b").shape == x.shape


def test_tensorboard_gets_the_sample_grid_each_validation(train_cfg):
    """logger=tensorboard: the labelled grid (the PNG's pixels) is in the event file, once per epoch."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = train_cfg("trainer.max_epochs=2", "logger=tensorboard")
    run_training(cfg)
    run = Path(cfg.paths.output_dir)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = events.Images("samples")
    assert [im.step for im in images] == [1, 2]  # the epoch, as in epoch_0001.png
    png = Image.open(run / "samples" / "epoch_0002.png")
    assert (images[-1].width, images[-1].height) == png.size


def test_a_default_run_prints_no_requires_grad_scalar_warning(train_cfg, recwarn):
    """The default run (the demo) warms the generators up to identity and logs the loss: reading a tensor that
    still has a graph as a Python float warns "Converting a tensor with requires_grad=True to a scalar" on every run.
    """
    run_training(train_cfg("trainer.max_epochs=1", "model.identity_init_steps=2"))
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "requires_grad=True to a scalar" in m], messages


def test_the_training_config_writes_where_run_layout_says(train_cfg):
    """The callbacks' folders in conf/callbacks/default.yaml and the CSV logger's are RunLayout's, which the readers
    (resume, evaluate, leaderboard, plot) use."""
    cfg = train_cfg()
    run = RunLayout(cfg.paths.output_dir)
    callbacks = cfg.callbacks
    assert Path(callbacks.model_checkpoint.dirpath) / f"{callbacks.model_checkpoint.filename}.ckpt" == run.best
    assert Path(callbacks.last_checkpoint.dirpath) / f"{callbacks.last_checkpoint.filename}.ckpt" == run.last
    assert Path(callbacks.checkpoint_on_signal.dirpath) / callbacks.checkpoint_on_signal.filename == run.last
    assert Path(callbacks.sample_grid.dirpath) == run.samples
    assert Path(callbacks.plot_curves.dirpath) == run.curves.parent
    assert Path(cfg.logger.csv.save_dir) / cfg.logger.csv.name == run.metrics_csv.parent
