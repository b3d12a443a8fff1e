"""Resume: exact continuation, ``ckpt_path=auto``, SIGTERM and SIGKILL mid-run, and atomic checkpoint writes."""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train_cfg, make_dataset
from lightning.pytorch.utilities.exceptions import SIGTERMException
from probes import ROOT, fake_slurm_job

from cyclegan_lightning.checkpoints.atomic import AtomicCheckpointIO
from cyclegan_lightning.errors import CheckpointError
from cyclegan_lightning.training import resume
from cyclegan_lightning.training.run import run_training

EXACT = ["logger=csv", "model.pool_size=2"]  # a pool of 2 fills in the first epoch, so its random swaps run too


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_training_state(a: dict, b: dict, pools: bool = True) -> None:
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    for name, tensor in a["state_dict"].items():  # generators, discriminators (and the val metric buffers)
        assert torch.equal(tensor, b["state_dict"][name]), name
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):  # Adam moments and steps
        for pid, state in opt_a["state"].items():
            for key, value in state.items():
                assert torch.equal(value, opt_b["state"][pid][key]), (pid, key)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for domain in "ab" if pools else "":  # CUT has no pools
        pool_a, pool_b = a["image_pools"][0][domain], b["image_pools"][0][domain]  # one process: one entry
        assert len(pool_a["images"]) == len(pool_b["images"]) == 2
        assert all(torch.equal(x, y) for x, y in zip(pool_a["images"], pool_b["images"]))
        assert torch.equal(pool_a["rng_state"], pool_b["rng_state"])


WORKERS = ["data.num_workers=2", "data.persistent_workers=true"]  # as the demo trains


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, dict]:
    """(data root, final checkpoint) of 2 uninterrupted epochs with 2 persistent workers: what resumes must match."""
    tmp = tmp_path_factory.mktemp("straight")
    data = make_dataset(tmp / "data")
    return data, _run(tmp / "run", data, "trainer.max_epochs=2", *WORKERS)


def _run(out: Path, data: Path, *overrides: str) -> dict:
    run_training(compose_train_cfg([f"data.root={data}", *EXACT, *overrides], out))
    return _load(out / "checkpoints" / "last.ckpt")


def test_resume_at_epoch_end_with_workers_is_bitwise_exact(straight, tmp_path: Path):
    """2 epochs straight == 1 epoch, then resume for the 2nd, both with 2 persistent workers (fresh ones on resume)."""
    data, reference = straight
    _run(tmp_path / "first", data, "trainer.max_epochs=1", *WORKERS)
    resumed = _run(
        tmp_path / "second",
        data,
        "trainer.max_epochs=2",
        *WORKERS,
        f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}",
    )
    _assert_same_training_state(reference, resumed)
    assert resumed["epoch"] == 2 - 1 and resumed["global_step"] == 2 * 2 * 2  # epochs x batches x optimizers


@pytest.mark.parametrize("epoch,batch,position", [(1, 1, (1, 1)), (0, 2, (1, 0))], ids=["mid-epoch", "last-batch"])
def test_sigterm_then_resume_on_other_worker_count_is_bitwise_exact(straight, tmp_path: Path, epoch, batch, position):
    """SIGTERM with 2 workers after batch 1 of epoch 2 (of 2 batches), or after the last batch of epoch 1 before its
    end-of-epoch hooks (LR step, validation); resumed with 0 workers, the run continues with the next batch, none
    re-run or skipped, and ends where the uninterrupted run ends."""
    data, reference = straight
    sigterm = [
        "+callbacks.sigterm._target_=probes.SigtermAfter",
        f"+callbacks.sigterm.epoch={epoch}",
        f"+callbacks.sigterm.batch={batch}",
    ]
    with pytest.raises(SIGTERMException):
        _run(tmp_path / "first", data, "trainer.max_epochs=2", *WORKERS, *sigterm)
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = _load(ckpt)
    assert saved["epoch"] == epoch and saved["global_step"] == (2 * epoch + batch) * 2  # batches x 2 optimizers
    assert saved["UnpairedDataModule"] == {"seed": 0, "epoch": position[0], "samples_done": position[1] * 2}
    resumed = _run(tmp_path / "second", data, "trainer.max_epochs=2", "data.num_workers=0", f"ckpt_path={ckpt}")
    _assert_same_training_state(reference, resumed)


def test_ckpt_path_auto_finds_newest_last_of_the_same_experiment(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(resume.RESOLVED_ENV, raising=False)
    logs = tmp_path / "outputs"
    for i, rel in enumerate(["demo/runs/t1", "demo/multiruns/t2/0", "demo/runs/t3", "other/runs/t9"]):
        path = logs / rel / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    os.utime(logs / "demo/multiruns/t2/0/checkpoints/last.ckpt", (5000, 5000))  # newest of demo
    (logs / "demo/runs/t4/checkpoints").mkdir(parents=True)  # the fresh run's own folder: empty
    assert resume.find_resume_checkpoint("auto", logs, "demo") == str(
        logs / "demo/multiruns/t2/0/checkpoints/last.ckpt"
    )
    assert resume.find_resume_checkpoint("auto", logs, "nothing-yet") is None  # first launch: from scratch, logged
    # in a multirun each job only resumes itself (a re-queued SLURM job), never a sibling's checkpoint
    own = logs / "demo/multiruns/t2/0"
    assert resume.find_resume_checkpoint("auto", logs, "demo", multirun=True, output_dir=own) == str(
        own / "checkpoints/last.ckpt"
    )
    assert resume.find_resume_checkpoint("auto", logs, "demo", multirun=True, output_dir=logs / "demo/x/1") is None
    with pytest.raises(CheckpointError, match="no such file"):
        resume.find_resume_checkpoint(str(tmp_path / "typo.ckpt"), logs, "demo")


def test_ckpt_path_auto_takes_the_newest_of_last_and_lightnings_hpc_checkpoints(tmp_path: Path, monkeypatch):
    """Lightning's own SLURM handler (where it is in charge) writes ``hpc_ckpt_<n>.ckpt`` into the run folder: one
    rule for both kinds, the newest wins, across the experiment and within a multirun job's own folder. A job SLURM
    requeued (``SLURM_RESTART_COUNT`` > 0) resumes even when its command line has no ``ckpt_path``."""
    monkeypatch.delenv(resume.RESOLVED_ENV, raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    logs = tmp_path / "outputs"
    files = ["demo/runs/7/checkpoints/last.ckpt", "demo/runs/7/hpc_ckpt_1.ckpt", "demo/multiruns/t/0/hpc_ckpt_2.ckpt"]
    for i, rel in enumerate([*files, "demo/multiruns/t/0/checkpoints/last.ckpt"]):
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / rel).write_bytes(b"x")
        os.utime(logs / rel, (1000 + i, 1000 + i))
    os.utime(logs / "demo/runs/7/hpc_ckpt_1.ckpt", (5000, 5000))  # saved after that run's last.ckpt
    assert resume.find_resume_checkpoint("auto", logs, "demo") == str(logs / "demo/runs/7/hpc_ckpt_1.ckpt")
    own = logs / "demo/multiruns/t/0"  # here last.ckpt is the newer one
    found = resume.find_resume_checkpoint("auto", logs, "demo", multirun=True, output_dir=own)
    assert found == str(own / "checkpoints/last.ckpt")
    os.utime(own / "hpc_ckpt_2.ckpt", (6000, 6000))
    found = resume.find_resume_checkpoint("auto", logs, "demo", multirun=True, output_dir=own)
    assert found == str(own / "hpc_ckpt_2.ckpt")

    assert resume.find_resume_checkpoint(None, logs, "demo") is None  # a first run: from scratch
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same command, requeued
    assert resume.find_resume_checkpoint(None, logs, "demo") == str(logs / "demo/multiruns/t/0/hpc_ckpt_2.ckpt")


def test_failed_write_keeps_previous_checkpoint_and_says_so(tmp_path: Path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    before = target.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")  # the write starts, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint there is unchanged"):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    monkeypatch.undo()
    assert io.load_checkpoint(target)["step"].item() == 1


def _start(args: list[str], root: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests"),
        "CYCLEGAN_ROOT": str(root),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    env.pop(resume.RESOLVED_ENV, None)
    log = open(root / f"log-{time.monotonic_ns()}.txt", "w")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # its own process group: signals reach its workers too


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"train.py ended early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for training to start"
        time.sleep(0.1)


def test_sigterm_to_the_job_saves_then_sigkill_mid_epoch_then_auto_resume_finishes(tmp_path: Path):
    """SIGTERM to the whole process group (as SLURM pre-empts: main process and its 2 workers) mid-epoch 1: a
    checkpoint and a clean exit. Resume, SIGKILL mid-epoch 2. ``ckpt_path=auto`` finishes."""
    data = make_dataset(tmp_path / "data")
    runs = tmp_path / "outputs" / "demo" / "runs"  # experiment=demo (the default) names runs "demo"
    common = [
        *TINY,
        "logger=csv",
        f"data.root={data}",
        "trainer.max_epochs=2",
        "ckpt_path=auto",
        *WORKERS,
        "+callbacks.slow._target_=probes.SlowBatches",
        "+callbacks.slow.seconds=0.5",
    ]

    def launch(name: str, after_batches: int) -> tuple[subprocess.Popen, Path]:
        marker = tmp_path / f"{name}.marker"
        proc = _start(
            [
                *common,
                f"hydra.run.dir={runs / name}",
                f"+callbacks.slow.marker={marker}",
                f"+callbacks.slow.after_batches={after_batches}",
            ],
            tmp_path,
        )
        _wait_for(marker, proc)
        return proc, runs / name / "checkpoints" / "last.ckpt"

    proc, ckpt = launch("first", after_batches=1)  # 1 of the 2 batches of epoch 1 done
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    state = _load(ckpt)
    assert state["epoch"] == 0 and state["global_step"] == 2  # saved mid-epoch, after batch 1 (2 optimizer steps)

    proc, ckpt = launch("second", after_batches=2)  # finishes epoch 1 (1 batch), then 1 batch into epoch 2
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs
    proc.wait(timeout=60)
    state = _load(ckpt)  # the end-of-epoch-1 checkpoint is intact (written atomically)
    assert state["epoch"] == 0 and state["global_step"] == 4

    proc = _start([*common, f"hydra.run.dir={runs / 'third'}"], tmp_path)
    assert proc.wait(timeout=180) == 0
    final = _load(runs / "third" / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 1 and final["global_step"] == 2 * 2 * 2


def test_sigusr1_under_slurm_saves_requeues_and_the_requeued_job_ends_bitwise_equal(straight, tmp_path: Path):
    """A fake SLURM job (SLURM_* variables, a stub ``scontrol`` on PATH that records its arguments) gets SIGUSR1,
    to the whole job (main process and its 2 workers), during batch 1 of epoch 2: it saves after that batch, runs
    ``scontrol requeue <job id>`` once and exits 0. The requeued job (same run folder and command line,
    ``SLURM_RESTART_COUNT=1``, no ``ckpt_path``: resumed as with ``auto``) ends bitwise equal to the uninterrupted
    run."""
    data, reference = straight
    env, scontrol_calls = fake_slurm_job(tmp_path, job_id="4242")
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # as in ``straight`` (in this process): the same arithmetic
    run = tmp_path / "outputs" / "demo" / "runs" / "4242"  # hydra.run.dir=.../$SLURM_JOB_ID: the same on requeue
    args = [*TINY, *EXACT, f"data.root={data}", "trainer.max_epochs=2", *WORKERS, f"hydra.run.dir={run}"]
    signal_at = ["+callbacks.usr1._target_=probes.SignalJobAt", "+callbacks.usr1.epoch=1", "+callbacks.usr1.batch=1"]
    assert _start([*args, *signal_at], tmp_path, env).wait(timeout=600) == 0
    assert scontrol_calls.read_text().splitlines() == ["requeue 4242"]
    saved = _load(run / "checkpoints" / "last.ckpt")
    assert saved["epoch"] == 1 and saved["global_step"] == (2 + 1) * 2  # after batch 1 of epoch 2, mid-epoch
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # Lightning's own SLURM handler stayed out of it

    requeued = {**env, "SLURM_RESTART_COUNT": "1"}
    probe = ["+callbacks.probe._target_=probes.RankProbe", f"+callbacks.probe.out_dir={tmp_path / 'probe'}"]
    assert _start([*args, *probe], tmp_path, requeued).wait(timeout=600) == 0
    trained = json.loads((tmp_path / "probe" / "rank0.json").read_text())["paths_a"]
    assert len(trained) == 2  # it resumed: only the last batch (2 images) was left, not the whole run again
    _assert_same_training_state(reference, _load(run / "checkpoints" / "last.ckpt"))
    assert scontrol_calls.read_text().splitlines() == ["requeue 4242"]  # the finished job did not requeue
    with open(run / "csv" / "metrics.csv", newline="") as f:  # the log continued: both parts' validations, once
        assert [(r["epoch"], r["step"]) for r in csv.DictReader(f) if r["val/swd"]] == [("0", "1"), ("1", "3")]


@pytest.mark.slow
def test_sigkill_at_random_points_five_times_then_auto_resume_finishes(tmp_path: Path):
    """Five launches killed (SIGKILL, workers included) at random moments, each resuming the newest ``last.ckpt``:
    every checkpoint left behind loads, and a last launch finishes the run."""
    data = make_dataset(tmp_path / "data")
    runs = tmp_path / "outputs" / "demo" / "runs"
    epochs = 20  # ~1 s each: five launches killed within 2.5 s of starting never reach the end on a fast machine
    common = [
        *TINY,
        "logger=csv",
        f"data.root={data}",
        f"trainer.max_epochs={epochs}",
        "ckpt_path=auto",
        *WORKERS,
        "+callbacks.slow._target_=probes.SlowBatches",
        "+callbacks.slow.seconds=0.3",
    ]
    rng = random.Random(0)
    for i in range(5):
        marker = tmp_path / f"kill{i}.marker"
        proc = _start([*common, f"hydra.run.dir={runs / f'kill{i}'}", f"+callbacks.slow.marker={marker}"], tmp_path)
        _wait_for(marker, proc)  # training has started (resumed, after the first)
        time.sleep(rng.uniform(0.0, 2.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        for ckpt in runs.glob("*/checkpoints/*.ckpt"):
            assert _load(ckpt)["epoch"] < epochs, ckpt  # complete and loadable, never a torn file
    proc = _start([*common, f"hydra.run.dir={runs / 'last'}"], tmp_path)
    assert proc.wait(timeout=300) == 0
    final = _load(runs / "last" / "checkpoints" / "last.ckpt")
    assert final["epoch"] == epochs - 1 and final["global_step"] == epochs * 2 * 2
