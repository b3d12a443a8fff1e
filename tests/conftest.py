"""Shared fixtures: tiny generated image folders and the *real* Hydra config, composed and shrunk for the CPU."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from cyclegan_lightning.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
register_resolvers()
os.environ["CYCLEGAN_OFFLINE"] = "1"  # no test downloads the Inception weights (test_fid_download serves its own)
# and none sees a developer's own download cache: tests that need files put them in this empty one themselves
os.environ["CYCLEGAN_CACHE"] = tempfile.mkdtemp(prefix="cyclegan-test-cache-")
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Overrides that shrink any experiment to seconds on a CPU: 1-block ResNet, 8 filters, 32x32 crops, no workers.
TINY = [
    "model/generator=resnet_6blocks",
    "model.generator.n_blocks=1",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "model.n_epochs=1",
    "model.n_epochs_decay=1",
    "data.load_size=36",
    "data.crop_size=32",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "data.batch_size=2",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.sample_grid.n_images=2",
]


def write_images(
    folder: Path, n: int, size: tuple[int, int] = (40, 40), mode: str = "RGB", seed: int = 0
) -> list[Path]:
    """``n`` random PNG images of ``size`` (w, h) in ``mode``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
        path = folder / f"img_{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def make_dataset(root: Path, n_train: int = 4, n_test: int = 2, size: tuple[int, int] = (40, 40)) -> Path:
    """``root/{trainA,trainB,testA,testB}`` of random images; A and B differ in seed."""
    for split, n in (("train", n_train), ("test", n_test)):
        for k, domain in enumerate("AB"):
            write_images(root / f"{split}{domain}", n, size, seed=hash((split, domain)) % 1000 + k)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def compose_train_cfg(overrides: list[str], output_dir: Path, tiny: bool = True) -> DictConfig:
    """Compose ``conf/train.yaml`` as ``train.py`` would, with ``output_dir`` as the run directory.

    Sets Hydra's global config so ``${hydra:...}`` interpolations resolve outside ``@hydra.main``.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=(TINY if tiny else []) + overrides, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # train.py's config has no hydra node either
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def train_cfg(tmp_path: Path, tiny_dataset: Path):
    """Factory: ``train_cfg(*overrides)`` -> tiny real config on ``tiny_dataset``, writing under ``tmp_path/run``."""

    def factory(*overrides: str) -> DictConfig:
        return compose_train_cfg([f"data.root={tiny_dataset}", "logger=csv", *overrides], tmp_path / "run")

    return factory


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two finished tiny runs (lambda_cycle 5 and 10, 1 epoch) laid out as a Hydra multirun: ``sweep/0``,
    ``sweep/1`` with ``checkpoints/`` and ``.hydra/{config,overrides}.yaml``. Returns (data root, run dirs).
    Shared by the prediction, evaluation, leaderboard, export and notebook tests: trained once per session."""
    from cyclegan_lightning.training.run import run_training

    base = tmp_path_factory.mktemp("tiny_runs")
    root = make_dataset(base / "data", n_train=4, n_test=3)
    runs = []
    for i, lam in enumerate((5, 10)):
        run = base / "sweep" / str(i)
        overrides = [f"model.lambda_cycle={lam}", "trainer.max_epochs=1", "seed=0"]
        cfg = compose_train_cfg([f"data.root={root}", "logger=csv", *overrides], run)
        run_training(cfg)
        (run / ".hydra").mkdir(parents=True, exist_ok=True)
        (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        runs.append(run)
    GlobalHydra.instance().clear()
    return root, runs


@pytest.fixture
def simulate_cpu(monkeypatch):
    """``simulate_cpu(native)``: from now on this process runs on a CPU with (or without) native bf16."""

    from cyclegan_lightning import hardware

    def set_cpu(native: bool) -> None:
        monkeypatch.delenv(hardware.ENV_OVERRIDE, raising=False)
        monkeypatch.setattr(hardware, "detect_cpu_bf16", lambda: (native, f"simulated CPU, native bf16 {native}"))
        hardware._cached.cache_clear()
        hardware._warned.clear()

    yield set_cpu
    hardware._cached.cache_clear()
    hardware._warned.clear()
