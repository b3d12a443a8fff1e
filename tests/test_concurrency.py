"""Two runs in one output folder: the second is refused with a clear message (no interleaved checkpoints);
DDP ranks > 0 neither lock nor write the run's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.training.callbacks import SampleGrid
from cyclegan_lightning.training.run import run_training
from cyclegan_lightning.training.run_lock import LOCK_NAME, OWNER_NAME, RunDirLock

ROOT = Path(__file__).resolve().parents[1]
# Another run, as the lock protocol sees it: filelock's exclusive lock on <folder>/.run.lock, its owner written in
# <folder>/.run.owner. filelock only (not torch) so that the helper process starts in milliseconds.
HOLD = f"""
import os, sys
from filelock import FileLock, Timeout
os.makedirs(sys.argv[1], exist_ok=True)
lock = FileLock(os.path.join(sys.argv[1], {LOCK_NAME!r}), timeout=0)
try:
    lock.acquire()
except Timeout:
    sys.exit("another training run holds it")
with open(os.path.join(sys.argv[1], {OWNER_NAME!r}), "w") as f:
    f.write(f"pid {{os.getpid()}} on testhost, started now")
print("locked", flush=True)
sys.stdin.read()
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s run lock until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_in_the_same_folder_is_refused_and_leaves_the_first_intact(train_cfg, tmp_path):
    cfg = train_cfg("trainer.max_epochs=1")
    run = Path(cfg.paths.output_dir)
    run.mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"first run's checkpoint")
    holder = hold_lock(run)
    try:
        with pytest.raises(
            ConfigError, match=rf"another training run \(pid {holder.pid} on testhost.*\) is using the output"
        ):
            run_training(cfg)
        assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"first run's checkpoint"
        assert not (run / "samples").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    run_training(cfg)  # the folder is free again: the run goes ahead (Lightning versions the foreign last.ckpt)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"first run's checkpoint"
    assert (run / "checkpoints" / "last-v1.ckpt").is_file()


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    holder = hold_lock(tmp_path)
    with pytest.raises(ConfigError):
        RunDirLock(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with RunDirLock(tmp_path):  # the kernel dropped the flock with the process
        assert str(os.getpid()) in (tmp_path / OWNER_NAME).read_text()


def test_lock_is_reentrant_within_one_process(tmp_path):
    first = RunDirLock(tmp_path).acquire()
    second = RunDirLock(tmp_path).acquire()
    second.release()
    proc = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path)], input="", capture_output=True, text=True, cwd=ROOT
    )
    assert "another training run holds it" in proc.stderr  # still held after one of two releases
    first.release()
    proc = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path)], input="", capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0


@pytest.mark.parametrize("env", [{"LOCAL_RANK": "1"}, {"RANK": "3"}, {"NODE_RANK": "1", "LOCAL_RANK": "0"}])
def test_ddp_ranks_other_than_zero_do_not_lock_or_write(tmp_path, monkeypatch, env):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "GROUP_RANK", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    holder = hold_lock(tmp_path / "run")  # rank 0 (another process) holds the run
    try:
        with RunDirLock(tmp_path / "run"):  # a rank > 0 joins rank 0's run: no error, no write
            pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with RunDirLock(tmp_path / "other"):
        assert not (tmp_path / "other").exists()


def test_sample_grid_is_written_by_rank_zero_only(tmp_path, monkeypatch):
    grid = SampleGrid(str(tmp_path / "samples"))
    monkeypatch.setattr(grid, "render", lambda trainer, module: torch.zeros(3, 8, 8))
    for rank, zero in ((1, False), (2, False)):
        trainer = SimpleNamespace(
            sanity_checking=False, current_epoch=0, is_global_zero=zero, loggers=[], global_rank=rank
        )
        grid.on_validation_epoch_end(trainer, None)
    assert not (tmp_path / "samples").exists()
    grid.on_validation_epoch_end(
        SimpleNamespace(sanity_checking=False, current_epoch=0, is_global_zero=True, loggers=[]), None
    )
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_0001.png", "latest.png"]


@pytest.mark.slow
def test_two_train_py_processes_in_one_folder(tmp_path):
    """The real thing: two train.py launched at once into one hydra.run.dir; exactly one trains."""
    from conftest import TINY, make_dataset

    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        *TINY,
        f"data.root={data}",
        "logger=none",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
    ]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT) for _ in "ab"
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    assert any("another training run" in out for out in outs)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)  # complete, loadable
    assert ckpt["epoch"] >= 1 and len(list((run / "checkpoints").glob("last*.ckpt"))) == 1


@pytest.mark.slow
def test_ddp_two_ranks_write_each_file_once(tmp_path):
    """2 CPU ranks (gloo): one lock holder, one set of checkpoints and grids, no leftover temporary files."""
    from conftest import TINY, make_dataset

    data = make_dataset(tmp_path / "data", n_train=4)
    run = tmp_path / "run"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        *TINY,
        f"data.root={data}",
        "logger=csv",
        "trainer=ddp_cpu",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp") or "/.epoch" in f or "/.latest" in f], files
    assert "checkpoints/last.ckpt" in files and "samples/epoch_0001.png" in files
    assert (run / OWNER_NAME).read_text().startswith("pid ")


def test_run_lock_is_released_after_an_early_failure(train_cfg, tmp_path):
    """A config or data error before fitting must not leave this process holding the folder (notebooks, tests)."""
    cfg = train_cfg("trainer.max_epochs=1", "model.nonfinite_policy=bogus")
    with pytest.raises(Exception, match="nonfinite_policy must be one of"):  # raised while the model is built
        run_training(cfg)
    proc = subprocess.run(
        [sys.executable, "-c", HOLD, str(cfg.paths.output_dir)], input="", capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr  # another process can take the folder at once


def test_rank_is_read_as_lightning_reads_it(monkeypatch):
    from cyclegan_lightning.training.run_lock import global_rank_from_env

    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "GROUP_RANK", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert global_rank_from_env() == 0
    monkeypatch.setenv("SLURM_PROCID", "0")  # an interactive SLURM allocation: 0 for every process of the step
    monkeypatch.setenv("LOCAL_RANK", "1")  # ... and Lightning spawned this one as local rank 1
    assert global_rank_from_env() == 1
