"""SLURM: the launcher config as submitit turns it into an sbatch file and as Lightning reads the tasks it starts,
and the requeue path's pieces (job id, a failing ``scontrol``). The end-to-end requeue (SIGUSR1 mid-epoch, then the
requeued job resuming bitwise) is in ``tests/test_resume.py``."""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import SLURMEnvironment
from probes import fake_slurm_job

from cyclegan_lightning.training import slurm
from cyclegan_lightning.training.callbacks import CheckpointOnSignal


def _sbatch_file(tmp_path: Path, monkeypatch, overrides: list[str]) -> tuple[str, object]:
    """The sbatch file hydra-submitit-launcher would submit for ``train.py -m hydra/launcher=slurm <overrides>``
    (its own code and submitit's, nothing submitted), and the composed config."""
    submitit = pytest.importorskip("submitit", reason="hydra/launcher=slurm needs pip install -e '.[slurm]'")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install -e '.[slurm]'")
    env, _ = fake_slurm_job(tmp_path)  # submitit refuses to build a SLURM executor where there is no srun
    (tmp_path / "slurm-bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "slurm-bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("CYCLEGAN_ROOT", str(tmp_path))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    import hydra

    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    executors = []
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", lambda self, fn, *args: executors.append(self) or [])
    assert launcher.launch([["model.lambda_cycle=5"]], initial_job_idx=0) == []
    return executors[0]._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid"), cfg


def _sbatch_flags(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S*))?$", text, flags=re.M))


def test_slurm_launcher_starts_the_tasks_lightning_expects_and_a_signal_we_handle(tmp_path: Path, monkeypatch):
    text, cfg = _sbatch_file(
        tmp_path, monkeypatch, ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "data.num_workers=6"]
    )
    flags = _sbatch_flags(text)
    assert flags["nodes"] == "2" and flags["ntasks-per-node"] == "4" and flags["gpus-per-node"] == "4"
    assert flags["cpus-per-task"] == "7"  # 6 DataLoader workers + the training process
    assert "gpus-per-task" not in flags and "cpus-per-gpu" not in flags  # no per-task GPU binding (hydra#2231)
    assert "requeue" in flags  # scontrol requeue is allowed
    assert flags["time"] == "1440"
    # srun in Slurm 22.05-23.02 does not inherit --cpus-per-task: the setup passes it on, before srun
    assert text.index("export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK") < text.index("\nsrun ")
    # the time-limit signal is one the run handles (submitit: USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)
    name, delay = flags["signal"].split("@")
    assert int(delay) == 120
    handled = CheckpointOnSignal(str(tmp_path), requeue_signals=cfg.callbacks.checkpoint_on_signal.requeue_signals)
    assert signal.Signals["SIG" + name] in handled.requeue_signals

    # each task srun starts from this file: Lightning detects SLURM and accepts the trainer's devices and nodes
    nodes, per_node = int(flags["nodes"]), int(flags["ntasks-per-node"])
    task = {"SLURM_NTASKS": nodes * per_node, "SLURM_NTASKS_PER_NODE": per_node, "SLURM_NNODES": nodes}
    for key, value in {**task, "SLURM_JOB_NAME": flags["job-name"], "SLURM_PROCID": 5, "SLURM_LOCALID": 1}.items():
        monkeypatch.setenv(key, str(value))
    assert SLURMEnvironment.detect()
    environment = SLURMEnvironment()
    environment.validate_settings(num_devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes)  # raises if not
    assert environment.world_size() == cfg.trainer.devices * cfg.trainer.num_nodes == 8


def test_requeue_names_the_array_task_as_scontrol_knows_it(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert slurm.job_id() == "1234"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1200")  # submitit's launcher submits each sweep as an array
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm.job_id() == "1200_3"
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    assert slurm.job_id() is None


def test_a_failing_or_missing_scontrol_is_logged_not_raised(tmp_path: Path, monkeypatch, caplog):
    env, calls = fake_slurm_job(tmp_path, scontrol_status=1)
    monkeypatch.setenv("PATH", env["PATH"])
    with caplog.at_level(logging.INFO, logger=slurm.__name__):
        assert slurm.requeue("77") is False
    assert calls.read_text().splitlines() == ["requeue 77"]
    assert "scontrol requeue 77 failed" in caplog.text and "ckpt_path=auto" in caplog.text

    caplog.clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no scontrol at all
    with caplog.at_level(logging.INFO, logger=slurm.__name__):
        assert slurm.requeue("77") is False
    assert "could not requeue SLURM job 77" in caplog.text

    ok_env, ok_calls = fake_slurm_job(tmp_path / "ok")
    monkeypatch.setenv("PATH", ok_env["PATH"])
    assert slurm.requeue("78") is True
    assert ok_calls.read_text().splitlines() == ["requeue 78"]
