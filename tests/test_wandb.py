"""W&B offline (no account, no network): what a run logs, read back from wandb's own run files; a failed run is
marked failed; a resumed run continues the same W&B run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wandb
from PIL import Image
from wandb_files import offline_runs

from cyclegan_lightning.training.run import run_training


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    yield
    if wandb.run is not None:  # never leak an open run into other tests
        wandb.finish()


def test_offline_run_logs_losses_lrs_metrics_grids_config_and_resumes_same_run(train_cfg, tmp_path: Path):
    cfg = train_cfg("logger=wandb", "trainer.max_epochs=1", "trainer.log_every_n_steps=1")
    run_training(cfg)
    assert wandb.run is None  # finished: the next job in this process gets its own run
    first_dir = Path(cfg.paths.output_dir)
    (run,) = offline_runs(first_dir)
    assert run.exit_code == 0
    for key in ("train/g/total", "train/g/cycle_a", "train/d/total", "train/lr", "train/lr_d", "val/cycle"):
        assert run.values(key), f"{key} not logged"
    assert run.values("train/lr")[0] == pytest.approx(2e-4)
    # resolved config, plus the effective batch
    assert run.config["model"]["lambda_cycle"] == 10.0 and run.config["data"]["root"] == cfg.data.root
    assert run.config["effective_batch_size"] == cfg.data.batch_size
    # the sample grid, with the colours of the PNG written to samples/ (images in [0, 1], not [-1, 1])
    (filenames,) = run.values("samples/filenames")
    logged = np.asarray(Image.open(first_dir / "wandb" / run.dir.name / "files" / filenames[0]).convert("RGB"), int)
    on_disk = np.asarray(Image.open(first_dir / "samples" / "epoch_0001.png").convert("RGB"), int)
    assert logged.shape == on_disk.shape and np.abs(logged - on_disk).max() <= 1

    # resuming from the checkpoint continues the same W&B run
    ckpt = first_dir / "checkpoints" / "last.ckpt"
    cfg2 = train_cfg("logger=wandb", "trainer.max_epochs=2", f"ckpt_path={ckpt}")
    with_new_dir = Path(str(cfg2.paths.output_dir))
    run_training(cfg2)
    resumed = [r for r in offline_runs(with_new_dir) if r.dir != run.dir]
    assert resumed and resumed[-1].run_id == run.run_id
    assert resumed[-1].values("val/cycle") and resumed[-1].exit_code == 0


def test_failed_run_is_marked_failed(train_cfg):
    cfg = train_cfg(
        "logger=wandb",
        "trainer.max_epochs=1",
        "+callbacks.boom._target_=probes.FailOnJob",
        "+callbacks.boom.job_num=null",
    )
    with pytest.raises(RuntimeError, match="fails on purpose"):
        run_training(cfg)
    assert wandb.run is None
    (run,) = offline_runs(Path(cfg.paths.output_dir))
    assert run.exit_code not in (None, 0)


def test_an_explicit_run_id_is_used_and_kept_on_resume(train_cfg):
    cfg = train_cfg("logger=wandb", "trainer.max_epochs=1", "logger.wandb.id=my-run-7")
    run_training(cfg)
    (run,) = offline_runs(Path(cfg.paths.output_dir))
    assert run.run_id == "my-run-7"
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    cfg2 = train_cfg("logger=wandb", "trainer.max_epochs=2", f"ckpt_path={ckpt}", "logger.wandb.id=my-run-8")
    run_training(cfg2)  # the id given now wins over the one stored in the checkpoint
    assert {r.run_id for r in offline_runs(Path(cfg2.paths.output_dir))} >= {"my-run-8"}
    assert "my-run-7" not in {r.run_id for r in offline_runs(Path(cfg2.paths.output_dir)) if r.dir != run.dir}
