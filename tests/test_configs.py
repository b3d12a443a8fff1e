"""Every experiment in conf/experiment composes from the real config and trains (shrunk) on generated images."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, compose_train_cfg, make_dataset, write_images
from omegaconf import OmegaConf

from cyclegan_lightning.training.run import run_training

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def test_all_seed_experiments_are_present():
    assert {"demo", "horse2zebra", "photo2cyberpunk", "selfie2anime", "hair_black2blond"} <= set(EXPERIMENTS)


def test_default_is_the_demo_with_reference_semantics(tmp_path):
    cfg = compose_train_cfg([], tmp_path, tiny=False)
    assert cfg.name == "demo" and cfg.data.build_demo
    ref = compose_train_cfg(["experiment=horse2zebra"], tmp_path, tiny=False)
    m, d = ref.model, ref.data
    assert m.generator.n_blocks == 9 and m.generator.ngf == 64 and m.generator.norm == "instance"
    assert m.discriminator.n_layers == 3 and m.gan_mode == "lsgan" and m.pool_size == 50
    assert (m.lambda_cycle, m.lambda_identity, m.lr, list(m.betas)) == (10.0, 0.5, 2e-4, [0.5, 0.999])
    assert (d.load_size, d.crop_size, d.flip, d.preprocess) == (286, 256, True, "resize_and_crop")
    assert ref.trainer.max_epochs == 200 and m.n_epochs == 100


def test_seed_project_settings(tmp_path):
    selfie = compose_train_cfg(["experiment=selfie2anime"], tmp_path, tiny=False)
    assert (selfie.model.n_epochs, selfie.model.n_epochs_decay, selfie.trainer.max_epochs) == (20, 20, 40)
    cyber = compose_train_cfg(["experiment=photo2cyberpunk"], tmp_path, tiny=False)
    assert cyber.model.lambda_identity * cyber.model.lambda_cycle == 5.0 and cyber.data.crop_size == 256
    hair = compose_train_cfg(["experiment=hair_black2blond"], tmp_path, tiny=False)
    assert hair.model.lr == 1e-5 and len(hair.data.train_a) == 2 and len(hair.data.train_b) == 2
    assert hair.trainer.precision == "32-true"  # no GPU here: full precision (the resolver's GPU branches below)


def test_amp_if_gpu_picks_the_precision_the_device_supports(monkeypatch):
    from cyclegan_lightning import config

    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    assert config.amp_if_gpu() == "32-true"
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(config.torch.cuda, "is_bf16_supported", lambda: True)
    assert config.amp_if_gpu() == "bf16-mixed"
    monkeypatch.setattr(config.torch.cuda, "is_bf16_supported", lambda: False)
    assert config.amp_if_gpu() == "16-mixed"


def experiment_data(experiment: str, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    if experiment == "hair_black2blond":  # several folders per domain
        for i, sub in enumerate(
            [
                "black_hair/men",
                "black_hair/women",
                "blond_hair/men",
                "blond_hair/women",
                "test/black_hair",
                "test/blond_hair",
            ]
        ):
            write_images(root / sub, 2, seed=i)
        return root
    return make_dataset(root)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_fast_dev_run(experiment, tmp_path):
    root = experiment_data(experiment, tmp_path)
    cfg = compose_train_cfg([f"experiment={experiment}", f"data.root={root}", "debug=fdr"], tmp_path / "run")
    assert OmegaConf.select(cfg, "trainer.fast_dev_run") is True
    metrics = run_training(cfg)
    assert "train/g/total" in metrics and "val/swd" in metrics
    assert ("val/cycle" in metrics) == (cfg.model._target_ == "cyclegan_lightning.models.CycleGAN")  # CUT: one way


def test_missing_data_root_names_the_folder(tmp_path):
    from cyclegan_lightning.errors import DataError

    cfg = compose_train_cfg(["experiment=horse2zebra", f"data.root={tmp_path}/absent", "debug=fdr"], tmp_path / "run")
    with pytest.raises(DataError, match="absent/trainA does not exist"):
        run_training(cfg)


def test_demo_experiment_builds_its_data_and_trains(tmp_path):
    """The default command's path, shrunk to a few batches: builds the demo data, writes a checkpoint and a grid."""
    cfg = compose_train_cfg(
        [
            f"data.root={tmp_path}/demo",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "+trainer.limit_val_batches=2",
        ],
        tmp_path / "run",
        tiny=False,
    )
    run_training(cfg)
    assert len(list((tmp_path / "demo" / "trainA").glob("*.png"))) == 100
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "samples" / "epoch_0001.png").is_file()
