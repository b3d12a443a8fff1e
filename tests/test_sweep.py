"""Hydra multirun through the real ``train.py`` in a subprocess: a 2-job grid (each job its own folder, CSV log and
W&B run), an Optuna study in which a crashing trial does not end the study, and a study whose best trial is the one
that translates, not the identity-like one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import TINY, make_dataset
from photos import write_photo_dataset
from probes import train_py
from wandb_files import offline_runs

FAST = [
    *TINY,
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=1",
    "++trainer.limit_val_batches=1",
    "++trainer.num_sanity_val_steps=0",
]


def test_grid_sweep_gives_each_job_its_own_folder_and_logger_runs(tmp_path: Path):
    data = make_dataset(tmp_path / "data")
    sweep = tmp_path / "sweep"
    train_py(
        ["-m", "model.lambda_cycle=5,10", "logger=[csv,wandb]", *FAST, f"data.root={data}", f"hydra.sweep.dir={sweep}"],
        root=tmp_path,
        env={"WANDB_MODE": "offline", "WANDB_API_KEY": ""},
    )
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    run_ids = set()
    for job, lam in (("0", 5), ("1", 10)):
        job_dir = sweep / job
        assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert (job_dir / "samples" / "epoch_0001.png").is_file()
        hparams = yaml.safe_load((job_dir / "csv" / "hparams.yaml").read_text())
        assert hparams["model"]["lambda_cycle"] == lam
        assert {"val/cycle", "val/swd", "val/health/diversity_a2b"} <= set(last_logged(job_dir))
        (wb,) = offline_runs(job_dir)  # exactly one W&B run per job, finished, with this job's config
        assert wb.config["model"]["lambda_cycle"] == lam and wb.exit_code == 0
        assert wb.values("val/swd") and wb.values("val/cycle")
        run_ids.add(wb.run_id)
    assert len(run_ids) == 2
    assert not (tmp_path / "outputs").exists()  # no stray single-run folder


def test_optuna_study_survives_a_failed_trial(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    data = make_dataset(tmp_path / "data")
    sweep = tmp_path / "study"
    result = train_py(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=3",
            "logger=csv",
            *FAST,
            f"data.root={data}",
            f"hydra.sweep.dir={sweep}",
            "+callbacks.fail._target_=probes.FailOnJob",
            "+callbacks.fail.job_num=0",
        ],
        root=tmp_path,
    )
    assert "job 0 fails on purpose" in result.stdout + result.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_job = [j for j in ("1", "2") if last_logged(sweep / j)["val/swd"] == pytest.approx(results["best_value"])]
    assert best_job  # the objective is a trial's val/swd
    assert set(results["best_params"]) == {  # model.discriminator.ndf is searched too, but TINY fixes it
        "model.lambda_cycle",
        "model.lambda_identity",
        "model.lr",
        "model.gan_mode",
        "model.discriminator.n_layers",
        "model.pool_size",
    }
    assert (sweep / "2" / "checkpoints" / "last.ckpt").is_file()  # trials after the failure ran


def last_logged(run: Path) -> dict[str, float]:
    """The last value of every metric in a run's CSV log."""
    values = {}
    with open(run / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            values |= {k: float(v) for k, v in row.items() if v not in ("", None)}
    return values


def test_study_picks_the_translating_trial_not_the_identity_like_one(tmp_path: Path):
    """Two trials on real photos: one whose generators apply the true colour grade (rounded to 8 bits, so its
    cycle error is small but not zero) and one that is the identity (cycle error exactly 0). Selecting by
    val/cycle would pick the identity; the study's objective, val/swd, must pick the translation."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    data = write_photo_dataset(tmp_path / "data")
    sweep = tmp_path / "study"
    train_py(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "logger=csv",
            *TINY,
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=1",
            "++trainer.num_sanity_val_steps=0",
            f"data.root={data}",
            f"hydra.sweep.dir={sweep}",
            "+callbacks.standin._target_=probes.StandInGenerators",
            "+callbacks.standin.identity_job=1",
        ],
        root=tmp_path,
    )
    translating, identity = last_logged(sweep / "0"), last_logged(sweep / "1")
    assert identity["val/cycle"] < translating["val/cycle"]  # the trap: val/cycle prefers the identity
    assert translating["val/swd"] < identity["val/swd"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(translating["val/swd"])
