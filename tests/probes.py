"""Test-only callbacks, added to a ``python train.py`` subprocess through Hydra overrides such as
``+callbacks.probe._target_=probes.RankProbe +callbacks.probe.out_dir=/tmp/x`` (with ``tests/`` on PYTHONPATH),
so the subprocess runs the real entry point and config with nothing patched.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning import Callback


def state_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and raw bytes of every tensor: equal iff bitwise equal."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def bare_trainer(**overrides) -> L.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or model summary: what a test of the system needs."""
    quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return L.Trainer(**(quiet | {"enable_model_summary": False} | overrides))


class RankProbe(Callback):
    """Each rank writes ``out_dir/rank<r>.json``: the A images it trained on and a hash of its final weights."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.paths_a: list[str] = []
        self.paths_b: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.paths_a += list(batch["path_a"])
        self.paths_b += list(batch["path_b"])

    def on_fit_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "paths_a": self.paths_a,
            "paths_b": self.paths_b,
            "weights": state_hash(pl_module.state_dict()),
            "epoch": trainer.current_epoch,
            # who started the processes (a single-device strategy has no cluster environment)
            "cluster": type(getattr(trainer.strategy, "cluster_environment", None)).__name__,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class SlowBatches(Callback):
    """Sleep after each training batch so a test can signal the process mid-epoch; touches ``marker`` once
    ``after_batches`` batches are done."""

    def __init__(self, seconds: float = 0.2, marker: str | None = None, after_batches: int = 1):
        self.seconds, self.marker, self.after = seconds, marker, after_batches
        self.done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done += 1
        if self.marker and self.done == self.after:
            Path(self.marker).touch()
        time.sleep(self.seconds)


class SigtermAfter(Callback):
    """Send this process SIGTERM at the end of batch ``batch`` (1-based) of epoch ``epoch`` (0-based): a pre-emption
    at an exact point, which Lightning turns into a ``SIGTERMException`` once the batch is done."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx + 1) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)


class SignalJobAt(Callback):
    """At the start of batch ``batch`` (1-based) of epoch ``epoch`` (0-based), send ``signal`` to this process's
    whole process group, DataLoader workers included, as SLURM signals every process of a job step."""

    def __init__(self, epoch: int, batch: int, signame: str = "SIGUSR1", rank: int | None = None):
        self.epoch, self.batch, self.signum = epoch, batch, signal.Signals[signame]
        self.rank = rank  # only this global rank's job step gets it (None: any)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if (trainer.current_epoch, batch_idx + 1) == (self.epoch, self.batch):
            os.killpg(os.getpgid(0), self.signum)


class FailOnJob(Callback):
    """Raise in ``setup`` when this is multirun job number ``job_num`` (a crashing sweep trial); ``None``: always."""

    def __init__(self, job_num: int | None = 0):
        self.job_num = job_num

    def setup(self, trainer, pl_module, stage: str) -> None:
        from hydra.core.hydra_config import HydraConfig

        if self.job_num is None or HydraConfig.get().job.num == self.job_num:  # None: always
            raise RuntimeError(f"probe: job {self.job_num} fails on purpose")


# ---- running the real entry point ------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def fake_slurm_job(folder: Path, job_id: str = "4242", scontrol_status: int = 0) -> tuple[dict[str, str], Path]:
    """Environment variables of a one-task SLURM batch job (as ``srun`` sets them, so Lightning detects SLURM) with
    a stub ``scontrol`` first on PATH that appends its arguments to the returned log file and exits with
    ``scontrol_status``."""
    bin_dir, calls = folder / "slurm-bin", folder / "scontrol-calls.txt"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stub = bin_dir / "scontrol"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexit {scontrol_status}\n')
    stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NAME": "train",  # not "bash" / "interactive", which Lightning takes for an interactive shell
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }
    return env, calls


def train_py(
    args: list[str],
    root: Path,
    env: dict | None = None,
    timeout: float = 300,
    check: bool = True,
    launcher: list[str] | None = None,
):
    """Run ``python [*launcher] train.py *args`` with ``tests/`` importable and ``outputs/`` under ``root``; return
    the result. ``launcher``: e.g. ``["-m", "torch.distributed.run", "--nproc-per-node=2", ...]`` (torchrun).

    ``CYCLEGAN_ROOT=root`` keeps every run (and ``ckpt_path=auto``'s search) out of the project's own outputs/.
    """
    import os
    import subprocess
    import sys

    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests"),
        "CYCLEGAN_ROOT": str(root),
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
        **(env or {}),
    }
    full_env.pop("CYCLEGAN_RESUMED_FROM", None)
    result = subprocess.run(
        [sys.executable, *(launcher or []), str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


class GradProbe(Callback):
    """Records, after every batch, the norm of the gradients each optimizer stepped on (generators and
    discriminators have disjoint parameters and each backward touches only its own, so they are still there),
    the dtype the generators compute in and the AMP loss scale. The last instance is ``GradProbe.last``."""

    last: GradProbe | None = None

    def __init__(self):
        self.step_norms: list[float] = []
        self.output_dtypes: set[torch.dtype] = set()
        self.scales: list[float] = []
        GradProbe.last = self

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.gen_a2b.register_forward_hook(lambda m, i, out: self.output_dtypes.add(out.dtype))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for opt in trainer.optimizers:
            grads = [p.grad.float() for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norms = torch.stack([torch.linalg.vector_norm(x) for x in grads])
            self.step_norms.append(torch.linalg.vector_norm(norms).item())
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            self.scales.append(float(scaler.get_scale()))


class SyncProbe(Callback):
    """Under DDP, counts the gradient all-reduces (DDP comm-hook calls, one per bucket) of every training batch
    and writes ``out_dir/sync<rank>.json``: ``{"per_batch": [...], "weights": hash}``."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.calls = 0
        self.per_batch: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_hook(state, bucket):
            self.calls += 1
            return allreduce_hook(None, bucket)

        trainer.strategy.model.register_comm_hook(None, counting_hook)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.per_batch.append(self.calls)
        self.calls = 0

    def on_fit_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "per_batch": self.per_batch,
            "weights": state_hash(pl_module.state_dict()),
            "global_step": trainer.global_step,
        }
        (self.out_dir / f"sync{trainer.global_rank}.json").write_text(json.dumps(record))


# ---- stand-in generators with known behaviour (quality metric, health and sweep tests) -----------------------------
class FixedTranslator(torch.nn.Module):
    """A generator that computes a fixed function; its one parameter never changes the output (the optimizer
    needs something to own)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + 0 * self.unused


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def stand_in(kind: str, direction: str) -> FixedTranslator:
    """``truth`` (tests/photos.py's grade, or its inverse, rounded to 8 bits like a saved image), ``identity``,
    or ``constant`` (mid-gray whatever the input: a collapsed generator)."""
    from photos import grade, ungrade

    fns = {
        "truth": (lambda x: _to_8bit(grade(x))) if direction == "a2b" else (lambda x: _to_8bit(ungrade(x))),
        "identity": lambda x: x,
        "constant": lambda x: torch.zeros_like(x),
    }
    return FixedTranslator(fns[kind])


class StandInGenerators(Callback):
    """Replace both generators (before the optimizers are built) by stand-ins; in multirun job ``identity_job``
    both are the identity instead: an identity-like sweep trial."""

    def __init__(self, a2b: str = "truth", b2a: str = "truth", identity_job: int | None = None):
        self.kinds = {"a2b": a2b, "b2a": b2a}
        self.identity_job = identity_job

    def setup(self, trainer, pl_module, stage: str) -> None:
        kinds = dict(self.kinds)
        if self.identity_job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num == self.identity_job:
                kinds = {"a2b": "identity", "b2a": "identity"}
        pl_module.gen_a2b, pl_module.gen_b2a = stand_in(kinds["a2b"], "a2b"), stand_in(kinds["b2a"], "b2a")
