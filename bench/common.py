"""Shared pieces of the benches: the real Hydra config composed for a bench, pre-loaded batches, machine info."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cyclegan_lightning.config import register_resolvers  # noqa: E402
from cyclegan_lightning.hardware import describe_cpu  # noqa: E402

# The reference networks (ResNet-9 generator, ngf 64; 70x70 PatchGAN, ndf 64) on the bundled demo images,
# batch 1, no logger/callbacks/validation/checkpoints: what is timed is the training step and the loop around it.
BENCH_OVERRIDES = [
    "experiment=demo",
    "model.identity_init_steps=0",  # the reference's training step: no identity start, identity loss 0.5
    "model.lambda_identity=0.5",
    "model/generator=resnet_9blocks",
    "model.generator.ngf=64",
    "model.discriminator.ndf=64",
    "data.batch_size=1",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "logger=none",
    "callbacks=none",
    "trainer.max_epochs=1",
    "++trainer.limit_val_batches=0",
    "++trainer.num_sanity_val_steps=0",
    "++trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def compose_cfg(size: int, overrides: list[str], device: str = "cpu") -> DictConfig:
    """``conf/train.yaml`` + the bench overrides at ``size`` x ``size`` crops (resize to 1.12x first, as 286/256)."""
    ov = (
        BENCH_OVERRIDES
        + [
            f"data.crop_size={size}",
            f"data.load_size={int(round(size * 286 / 256))}",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        ]
        + list(overrides)
    )
    return compose_train(ov)


def compose_train(overrides: list[str], out: Path | None = None) -> DictConfig:
    """``conf/train.yaml`` composed as ``train.py`` would, on the bundled demo data, writing under ``out``."""
    register_resolvers()
    out = out or Path(tempfile.mkdtemp(prefix="cyclegan-bench-"))
    ov = [f"data.root={ROOT / 'data' / 'demo'}", *overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=ov, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.paths.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    OmegaConf.resolve(cfg)
    return cfg


def model_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.model, resolve=True)


def preload(cfg: DictConfig, n: int, seed: int = 0) -> list[dict]:
    """``n`` training samples from the real dataset (decoded, cropped, normalised) as batch-1 dicts of tensors."""
    import hydra

    torch.manual_seed(seed)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return [{"a": dm.train_set[i]["a"].unsqueeze(0), "b": dm.train_set[i]["b"].unsqueeze(0)} for i in range(n)]


class ListDataset(torch.utils.data.Dataset):
    """Pre-loaded samples (each a batch-1 dict), served as they are: ``DataLoader(batch_size=None)``."""

    def __init__(self, batches: list[dict], length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.batches[i % len(self.batches)]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a subprocess
    would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{describe_cpu()}, {gpu}"
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
