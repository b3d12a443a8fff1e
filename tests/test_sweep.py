"""Hydra multirun through the real ``train.py`` in a subprocess: a 2-job grid (each job its own folder, CSV log and
W&B run) and an Optuna study in which a crashing trial does not end the study."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import TINY, make_dataset
from probes import train_py
from wandb_files import offline_runs

FAST = [*TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=1", "++trainer.limit_val_batches=1",
        "++trainer.num_sanity_val_steps=0"]  # fmt: skip


def test_grid_sweep_gives_each_job_its_own_folder_and_logger_runs(tmp_path: Path):
    data = make_dataset(tmp_path / "data")
    sweep = tmp_path / "sweep"
    train_py(
        ["-m", "model.lambda_cycle=5,10", "logger=[csv,wandb]", *FAST, f"data.root={data}", f"hydra.sweep.dir={sweep}"],
        root=tmp_path, env={"WANDB_MODE": "offline", "WANDB_API_KEY": ""},
    )  # fmt: skip
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    run_ids = set()
    for job, lam in (("0", 5), ("1", 10)):
        job_dir = sweep / job
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert (job_dir / "samples" / "epoch_0001.png").is_file()
        hparams = yaml.safe_load((job_dir / "csv" / "hparams.yaml").read_text())
        assert hparams["model"]["lambda_cycle"] == lam
        assert "val/cycle" in (job_dir / "csv" / "metrics.csv").read_text()
        (wb,) = offline_runs(job_dir)  # exactly one W&B run per job, finished, with this job's config
        assert wb.config["model"]["lambda_cycle"] == lam and wb.exit_code == 0
        assert wb.values("val/cycle")
        run_ids.add(wb.run_id)
    assert len(run_ids) == 2
    assert not (tmp_path / "outputs").exists()  # no stray single-run folder


def test_optuna_study_survives_a_failed_trial(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    data = make_dataset(tmp_path / "data")
    sweep = tmp_path / "study"
    result = train_py(
        ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3",
         "logger=csv", *FAST, f"data.root={data}", f"hydra.sweep.dir={sweep}",
         "+callbacks.fail._target_=probes.FailOnJob", "+callbacks.fail.job_num=0"],
        root=tmp_path,
    )  # fmt: skip
    assert "job 0 fails on purpose" in result.stdout + result.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert isinstance(results["best_value"], float) and 0 < results["best_value"] < 2  # val/cycle of a trial
    assert set(results["best_params"]) == {"model.lambda_cycle", "model.lambda_identity", "model.lr"}
    assert (sweep / "2" / "checkpoints" / "last.ckpt").is_file()  # trials after the failure ran
