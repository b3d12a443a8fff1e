"""Real 2-process DDP on CPU (gloo) through ``python train.py trainer=ddp_cpu`` in a subprocess.

In-process DDP under pytest would re-launch pytest itself in the child (pitfall 6), so the test runs the real
entry point and reads back what each rank wrote through ``tests/probes.py``'s ``RankProbe`` callback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, make_dataset
from probes import ROOT, fake_slurm_job, state_hash, train_py


def _ddp_args(tmp: Path, name: str) -> list[str]:
    """The 2-process CPU run of these tests (8 images, 1 epoch, a pool of 2), into ``tmp/name`` with its probe's
    records in ``tmp/name-probe`` (``ddp_run``'s: ``tmp/run`` and ``tmp/probe``)."""
    probe = tmp / ("probe" if name == "run" else f"{name}-probe")
    return [
        "trainer=ddp_cpu",
        *TINY,
        f"data.root={tmp / 'data'}",
        "trainer.max_epochs=1",
        "model.pool_size=2",
        "trainer.log_every_n_steps=1",  # a CSV row per batch: the requeued run's log is compared row by row
        f"hydra.run.dir={tmp / name}",
        "+callbacks.probe._target_=probes.RankProbe",
        f"+callbacks.probe.out_dir={probe}",
    ]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """Lightning's own 2-process launch: ``train.py trainer=ddp_cpu`` re-runs its command line for rank 1."""
    tmp = tmp_path_factory.mktemp("ddp")
    make_dataset(tmp / "data", n_train=8)
    train_py(_ddp_args(tmp, "run"), root=tmp)
    return tmp


def test_ddp_cpu_two_ranks_split_data_and_end_identical(ddp_run: Path):
    ranks = [json.loads((ddp_run / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # DistributedSampler: the 8 A images are split, 4 per rank, none seen twice
    seen = [set(r["paths_a"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 8
    # the random B partners (and crops/flips) differ too: the rank is part of each sample's seed
    assert ranks[0]["paths_b"] != ranks[1]["paths_b"]
    # gradients are all-reduced: both ranks end with bitwise identical weights, equal to the saved checkpoint
    assert ranks[0]["weights"] == ranks[1]["weights"]
    ckpt = torch.load(ddp_run / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state_hash(ckpt["state_dict"]) == ranks[0]["weights"]
    # each rank's own image pool and random state is in the checkpoint (gathered to rank 0), once
    pools = [s["a"]["images"] for s in ckpt["image_pools"]]
    assert len(pools) == 2 and not torch.equal(pools[0][0], pools[1][0])
    assert len(ckpt["rng_states"]) == 2 and not torch.equal(
        ckpt["rng_states"][0]["torch"], ckpt["rng_states"][1]["torch"]
    )
    assert "rank_states" not in ckpt


def test_ddp_writes_one_set_of_outputs(ddp_run: Path):
    run = ddp_run / "run"
    assert {p.name for p in run.iterdir()} - {".run.lock", ".run.owner"} == {
        ".hydra",
        "checkpoints",
        "csv",
        "plots",
        "samples",
        "train.log",
        "train_ddp_process_1.log",
    }  # rank 1 adds only its log: no second run folder, config, logger version or checkpoint set
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "latest.png"]
    assert not (ddp_run / "outputs").exists()  # nothing went to a default Hydra run folder
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["world_size"] == 2 and hparams["effective_batch_size"] == 2 * hparams["data"]["batch_size"]


def test_multirun_with_process_spawning_ddp_is_refused(train_cfg):
    """Pitfall 6: in a multirun, Lightning's re-launched DDP ranks would each re-run the whole sweep."""
    from cyclegan_lightning.errors import ConfigError
    from cyclegan_lightning.training.run import run_training

    cfg = train_cfg("trainer=ddp_cpu", "hydra.mode=MULTIRUN")
    with pytest.raises(ConfigError, match="re-run the whole sweep"):
        run_training(cfg)


@pytest.mark.slow
def test_ddp_resume_restores_each_ranks_pools_and_rng(ddp_run: Path):
    """2 DDP epochs straight == the 1-epoch run above resumed for a 2nd epoch, on both ranks (about 90 s)."""
    data = ddp_run / "data"
    common = ["trainer=ddp_cpu", *TINY, f"data.root={data}", "trainer.max_epochs=2", "model.pool_size=2"]
    for name, extra in (("straight", []), ("resumed", [f"ckpt_path={ddp_run / 'run/checkpoints/last.ckpt'}"])):
        train_py(
            [
                *common,
                *extra,
                f"hydra.run.dir={ddp_run / name}",
                "+callbacks.probe._target_=probes.RankProbe",
                f"+callbacks.probe.out_dir={ddp_run / (name + '-probe')}",
            ],
            root=ddp_run,
        )
    for rank in (0, 1):
        straight = json.loads((ddp_run / "straight-probe" / f"rank{rank}.json").read_text())
        resumed = json.loads((ddp_run / "resumed-probe" / f"rank{rank}.json").read_text())
        assert resumed["weights"] == straight["weights"]
        assert resumed["paths_b"] == straight["paths_b"][len(straight["paths_b"]) // 2 :]  # epoch 2's B draws
    a, b = (
        torch.load(ddp_run / n / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
        for n in ("straight", "resumed")
    )
    for sa, sb in zip(a["image_pools"], b["image_pools"], strict=True):
        for d in "ab":
            pool_a, pool_b = sa[d]["images"], sb[d]["images"]
            assert len(pool_a) == len(pool_b) == 2 and all(torch.equal(x, y) for x, y in zip(pool_a, pool_b))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_end_with_the_weights_of_lightnings_own_launch(ddp_run: Path):
    """``torchrun --nproc-per-node=2`` on 127.0.0.1 starts both gloo processes itself (Lightning detects torchrun
    and starts none): the same config and seed end with bitwise the weights of Lightning's own launch, on both
    ranks, from the same data split."""
    torchrun = ["-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2"]
    torchrun += ["--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    train_py(_ddp_args(ddp_run, "torchrun"), root=ddp_run, launcher=torchrun)
    for rank in (0, 1):
        own = json.loads((ddp_run / "probe" / f"rank{rank}.json").read_text())
        launched = json.loads((ddp_run / "torchrun-probe" / f"rank{rank}.json").read_text())
        assert (own["cluster"], launched["cluster"]) == ("LightningEnvironment", "TorchElasticEnvironment")
        assert launched["world_size"] == 2 and launched["paths_a"] == own["paths_a"]
        assert launched["weights"] == own["weights"]
    saved = [
        torch.load(ddp_run / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for name in ("run", "torchrun")
    ]
    assert state_hash(saved[0]["state_dict"]) == state_hash(saved[1]["state_dict"])
    for opt_a, opt_b in zip(saved[0]["optimizer_states"], saved[1]["optimizer_states"], strict=True):
        for pid, state in opt_a["state"].items():
            assert all(torch.equal(v, opt_b["state"][pid][k]) for k, v in state.items()), pid


def _srun(args: list[str], root: Path, env: dict[str, str], ntasks: int = 2) -> list[int]:
    """Start ``ntasks`` processes of ``train.py *args`` as srun would on one node (SLURM_PROCID, SLURM_LOCALID, ...;
    each in its own process group) and return their exit codes."""
    task_env = {
        **os.environ,
        **env,
        "PYTHONPATH": str(ROOT / "tests"),
        "CYCLEGAN_ROOT": str(root),
        "OMP_NUM_THREADS": "1",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    task_env.pop("CYCLEGAN_RESUMED_FROM", None)
    procs = []
    for rank in range(ntasks):
        log = open(root / f"task{rank}-{len(list(root.glob('task*.log')))}.log", "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "train.py"), *args],
                cwd=ROOT,
                env={**task_env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return [p.wait(timeout=600) for p in procs]


@pytest.mark.slow
def test_requeue_signal_to_one_slurm_task_stops_both_ranks_together_and_resumes_bitwise(ddp_run: Path):
    """Two srun tasks (a fake SLURM job) of the DDP run above; only rank 1's processes get SIGUSR1, during batch 1.
    Both ranks still stop after that same batch (they agree by an all-reduce), write one checkpoint, and rank 0, which
    never saw the signal, runs ``scontrol requeue``. The requeued tasks end with bitwise the weights of the
    uninterrupted run (launched by Lightning itself), on both ranks."""
    root = ddp_run / "slurm"  # CYCLEGAN_ROOT: ckpt_path=auto searches root/outputs/demo/
    env, scontrol_calls = fake_slurm_job(root, job_id="4343")
    name = "slurm/outputs/demo/runs/4343"  # hydra.run.dir=.../$SLURM_JOB_ID: the same folder after the requeue
    args = _ddp_args(ddp_run, name)
    signal_rank1 = [
        "+callbacks.usr1._target_=probes.SignalJobAt",
        "+callbacks.usr1.epoch=0",
        "+callbacks.usr1.batch=1",
        "+callbacks.usr1.rank=1",
    ]
    assert _srun([*args, *signal_rank1], root, env) == [0, 0]
    assert scontrol_calls.read_text().splitlines() == ["requeue 4343"]
    saved = torch.load(ddp_run / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == 1 * 2  # after batch 1 of 2, on both ranks' data

    assert _srun(args, root, {**env, "SLURM_RESTART_COUNT": "1"}) == [0, 0]
    assert scontrol_calls.read_text().splitlines() == ["requeue 4343"]
    for rank in (0, 1):
        straight = json.loads((ddp_run / "probe" / f"rank{rank}.json").read_text())
        resumed = json.loads((ddp_run / f"{name}-probe" / f"rank{rank}.json").read_text())
        assert resumed["cluster"] == "SLURMEnvironment" and resumed["world_size"] == 2
        assert resumed["weights"] == straight["weights"]
        assert resumed["paths_a"] == straight["paths_a"][2:]  # it resumed: only batch 2 (2 images) was left
    csv_log = "csv/metrics.csv"  # rank 0's log continued in the same folder: every row once, the same values
    assert (ddp_run / name / csv_log).read_bytes() == (ddp_run / "run" / csv_log).read_bytes()
