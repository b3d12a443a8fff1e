"""The demo: an invertible style with written ground truth, paired metrics against it, a labelled sample grid, the
identity start, and the curves plot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan_lightning.data.demo import MIX, SHADOW_TINT, _curve, build_demo_dataset, cel, dusk, undusk
from cyclegan_lightning.evaluation.paired import PairedMetrics
from cyclegan_lightning.metrics.paired import psnr
from cyclegan_lightning.training.callbacks import ROW_NAMES, SampleGrid


def photo(size: int = 64) -> np.ndarray:
    from skimage import data as skdata

    return np.asarray(Image.fromarray(skdata.astronaut()).resize((size, size), Image.BICUBIC))


def as_unit(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255


def test_dusk_changes_a_photo_strongly_and_inverts_exactly():
    x = photo()
    graded = dusk(x)
    assert psnr(as_unit(graded), as_unit(x)) < 20  # a clearly visible change, not a tint
    back = undusk(graded)
    assert np.abs(back.astype(int) - x).max() <= 2  # invertible: B->A is learnable (8-bit rounding only)
    assert psnr(as_unit(back), as_unit(x)) > 45


def high_frequency_energy(rgb: np.ndarray) -> float:
    """Mean squared Laplacian of the luma: fine texture (fur, wood grain) raises it."""
    luma = rgb.astype(np.float64).mean(axis=-1)
    lap = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
    return float((lap**2).mean())


def test_cel_changes_texture_not_only_colour_and_is_local():
    x = photo(96)
    shaded = cel(x)
    assert psnr(as_unit(shaded), as_unit(x)) < 20  # a strong change
    # not a per-pixel colour map: two pixels of the same colour can come out differently (their neighbourhoods
    # differ), which no colour grade (dusk, gray) can do
    colours = x.reshape(-1, 3)
    _, first, inverse = np.unique(colours, axis=0, return_index=True, return_inverse=True)
    outputs = shaded.reshape(-1, 3)
    assert (np.abs(outputs.astype(int) - outputs[first][inverse.ravel()].astype(int)).max(axis=1) > 40).mean() > 0.01
    # the fine texture is replaced by sharp band edges and ink lines: far more high-frequency energy, where a colour
    # grade that dims (dusk) has less
    assert high_frequency_energy(shaded) > 1.5 * high_frequency_energy(x) > 1.5 * high_frequency_energy(dusk(x))
    smooth = cel(np.full_like(x, 128))
    assert len(np.unique(smooth.reshape(-1, 3), axis=0)) == 1  # a flat input stays flat: no invented texture
    # local: a change 12 pixels away leaves a pixel's output untouched (the filters reach a few pixels)
    y = x.copy()
    y[:, 60:] = 255 - y[:, 60:]
    assert np.array_equal(cel(y)[:, :48], shaded[:, :48])
    assert not np.array_equal(cel(y)[:, 56:60], shaded[:, 56:60])
    assert np.array_equal(cel(x), shaded)  # deterministic


def test_the_cel_demo_writes_its_a2b_truth(tmp_path):
    root = build_demo_dataset(tmp_path / "demo_cel", n_train=2, n_test=2, size=36, task="cel")
    for name in sorted(p.name for p in (root / "testA").iterdir()):
        image = np.asarray(Image.open(root / "testA" / name))
        assert np.array_equal(np.asarray(Image.open(root / "truthB" / name)), cel(image))
    for name in sorted(p.name for p in (root / "trainB").iterdir()):  # B is cel-shaded: few distinct tones
        b = np.asarray(Image.open(root / "trainB" / name))
        a = np.asarray(Image.open(root / "trainA" / name))
        assert len(np.unique(b.reshape(-1, 3), axis=0)) < len(np.unique(a.reshape(-1, 3), axis=0))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_train=3, n_test=2, size=36)


def test_demo_writes_ground_truth_named_after_the_test_images(demo_root):
    for test, truth, fn in (("testA", "truthB", dusk), ("testB", "truthA", undusk)):
        names = sorted(p.name for p in (demo_root / test).iterdir())
        assert names == sorted(p.name for p in (demo_root / truth).iterdir()) and len(names) == 2
        for name in names:
            image = np.asarray(Image.open(demo_root / test / name))
            assert np.array_equal(np.asarray(Image.open(demo_root / truth / name)), fn(image))


def dusk_torch(x: torch.Tensor) -> torch.Tensor:
    """The demo grade on a [-1, 1] batch: a perfect A->B translator."""
    y = _curve(
        torch.einsum("ij,njhw->nihw", torch.from_numpy(MIX), (x + 1) / 2) + torch.from_numpy(SHADOW_TINT)[:, None, None]
    )
    return y * 2 - 1


class FixedModule(torch.nn.Module):
    """A stand-in LightningModule whose generators are known functions."""

    def __init__(self, a2b, b2a):
        super().__init__()
        self.fns = {"a2b": a2b, "b2a": b2a}
        self.device = torch.device("cpu")

    def forward(self, x, direction="a2b"):
        return self.fns[direction](x)


def trainer_on(root: Path, **kw) -> SimpleNamespace:
    from cyclegan_lightning.data import UnpairedDataModule

    dm = UnpairedDataModule(root=str(root), load_size=36, crop_size=32, num_workers=0, check_images="none")
    dm.setup("fit")
    return SimpleNamespace(datamodule=dm, sanity_checking=False, current_epoch=0, is_global_zero=True, **kw)


def test_paired_metrics_score_the_true_translation_above_doing_nothing(demo_root):
    trainer = trainer_on(demo_root)
    perfect = PairedMetrics().compute(trainer, FixedModule(dusk_torch, lambda x: x))
    assert perfect["paired_psnr_a2b"] > 40  # the true grade matches truthB (so the folders are not swapped)
    assert perfect["paired_psnr_identity_a2b"] < 25 and perfect["paired_ssim_a2b"] > 0.98
    # doing nothing scores exactly the identity baseline, in both directions
    assert perfect["paired_psnr_b2a"] == pytest.approx(perfect["paired_psnr_identity_b2a"])
    assert perfect["paired_ssim_b2a"] == pytest.approx(perfect["paired_ssim_identity_b2a"])
    wrong_way = PairedMetrics().compute(trainer, FixedModule(lambda x: x, dusk_torch))
    assert wrong_way["paired_psnr_b2a"] < wrong_way["paired_psnr_identity_b2a"]  # grading B again moves away


def test_paired_metrics_do_nothing_without_truth_folders(tiny_dataset):
    trainer = trainer_on(tiny_dataset)
    assert PairedMetrics().compute(trainer, FixedModule(dusk_torch, dusk_torch)) == {}


COLOURS = {
    "red": (1, -1, -1),
    "green": (-1, 1, -1),
    "magenta": (1, -1, 1),
    "blue": (-1, -1, 1),
    "yellow": (1, 1, -1),
    "cyan": (-1, 1, 1),
}


def test_sample_grid_rows_are_in_the_named_order_and_enlarged():
    """A->B rolls the channels, B->A negates them: each of the six rows gets its own known colour."""

    def solid(name):
        return torch.tensor(COLOURS[name], dtype=torch.float32)[:, None, None].expand(3, 16, 16)

    val_sets = {"a": [{"image": solid("red")}] * 2, "b": [{"image": solid("blue")}] * 2}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(val_sets=val_sets), current_epoch=6)
    module = FixedModule(lambda x: x.roll(1, dims=1), lambda x: -x)
    grid = SampleGrid("unused", n_images=2, display_size=64).render(trainer, module)
    rgb = (grid * 255).round().to(torch.uint8).permute(1, 2, 0)
    expected = ["red", "green", "magenta", "blue", "yellow", "cyan"]  # real A, A->B, A->B->A, real B, B->A, B->A->B
    assert len(expected) == len(ROW_NAMES)
    centres = []
    for name in expected:
        colour = torch.tensor([255 if c > 0 else 0 for c in COLOURS[name]], dtype=torch.uint8)
        ys, xs = torch.nonzero((rgb == colour).all(-1), as_tuple=True)
        assert len(ys) >= 2 * 64 * 64  # both tiles of the row, enlarged 16 -> 64 px
        centres.append(float(ys.float().mean()))
    assert centres == sorted(centres)
    text_strip = rgb[:, : int(xs.min())]  # the row names, left of the tiles
    assert (text_strip.int().sum(-1) < 300).sum() > 100  # dark text pixels


def tiny_cfg(root: Path, run: Path, *extra: str):
    from conftest import compose_train_cfg

    return compose_train_cfg([f"data.root={root}", "data.check_images=none", *extra], run)


def test_identity_init_makes_both_generators_copy_their_input(demo_root, tmp_path):
    import hydra

    from cyclegan_lightning.training.identity_warmup import IdentityWarmup

    cfg = tiny_cfg(demo_root, tmp_path / "run", "model.identity_init_steps=40")
    model = hydra.utils.instantiate(cfg.model)
    trainer = trainer_on(demo_root, ckpt_path=None)
    model._trainer = trainer
    x = {d: torch.stack([trainer.datamodule.val_sets[d][i]["image"] for i in range(2)]) for d in "ab"}

    def error():
        return [
            float((gen(x[d]) - x[d]).abs().mean().detach()) for gen, d in ((model.gen_a2b, "b"), (model.gen_b2a, "a"))
        ]

    before = error()
    warmup = IdentityWarmup()  # what run_training adds to every fit
    trainer.ckpt_path = "resumed.ckpt"  # a resumed run keeps its trained generators
    warmup.on_fit_start(trainer, model)
    assert error() == before
    trainer.ckpt_path = None
    warmup.on_fit_start(trainer, model)
    after = error()
    assert all(a < 0.7 * b for a, b in zip(after, before)), (before, after)


def test_a_demo_run_logs_paired_metrics_and_draws_its_curves(demo_root, tmp_path, caplog):
    import csv
    import logging
    import subprocess
    import sys

    from conftest import ROOT

    from cyclegan_lightning.training.run import run_training

    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        metrics = run_training(tiny_cfg(demo_root, run, "trainer.max_epochs=2", "model.identity_init_steps=3"))
    for key in ("val/paired_psnr_a2b", "val/paired_ssim_b2a", "val/paired_psnr_identity_a2b"):
        assert key in metrics
    assert "paired metrics against ground truth after epoch 2: A->B PSNR" in caplog.text
    assert "generators trained to copy their input for 3 steps" in caplog.text  # run_training's IdentityWarmup
    with open(run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/paired_psnr_b2a")]
    assert len(rows) == 2  # one per epoch
    curves = Image.open(run / "plots" / "curves.png")  # drawn at the end of training
    assert curves.size[0] > 800 and curves.size[1] > 600
    out = tmp_path / "again.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "plot.py"), f"run={run}", f"out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == curves.size
    missing = subprocess.run(
        [sys.executable, str(ROOT / "plot.py"), f"run={tmp_path / 'nothing'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "no metrics file" in missing.stdout + missing.stderr


def test_curves_are_grouped_by_family():
    from cyclegan_lightning.evaluation.plotting import group_columns

    panels = group_columns(
        [
            "train/g/total",
            "train/d/a",
            "train/d/acc_real_b",
            "train/lr",
            "val/swd",
            "val/cycle_a",
            "val/paired_psnr_a2b",
            "val/paired_psnr_identity_a2b",
            "val/health/drift_a2b",
            "data/skipped_images",
        ]
    )
    assert panels["discriminator accuracy"] == ["train/d/acc_real_b"]
    assert panels["discriminator losses"] == ["train/d/a"]
    assert panels["health"] == ["val/health/drift_a2b"]
    assert len(panels["paired PSNR vs ground truth (dB; dashed: input unchanged)"]) == 2
    assert panels["data"] == ["data/skipped_images"]
    assert sum(len(c) for c in panels.values()) == 10
