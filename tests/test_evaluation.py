"""Evaluation: the Inception file is checked before any metric is built; FID/KID plumbing with a stand-in feature
extractor (never a download); PSNR/SSIM values; JSON + Markdown; the optional FID callback logs like other metrics."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

from cyclegan_lightning.evaluation import (
    FidKid,
    MissingWeightsError,
    RandomConvFeatures,
    build_feature_extractor,
    write_results,
)
from cyclegan_lightning.evaluation.evaluate import evaluate
from cyclegan_lightning.evaluation.metrics import INCEPTION_FILE
from cyclegan_lightning.inference import LoadedGenerators, Translator
from cyclegan_lightning.training.run import run_training


def test_missing_inception_weights_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    import torchmetrics.image.fid as tm_fid

    def no_construct(*a, **k):
        raise AssertionError("the metric must not be built before the weights file is checked")

    monkeypatch.setattr(tm_fid, "NoTrainInceptionV3", no_construct)
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / INCEPTION_FILE
    with pytest.raises(MissingWeightsError) as info:
        build_feature_extractor("inception")
    msg = str(info.value)
    assert str(expected) in msg and "https://github.com/toshas/torch-fidelity/releases/download" in msg
    assert "fid.inception_weights=" in msg and "fid.enabled=false" in msg

    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"<html>not found</html>")  # what a blocked download often leaves
    with pytest.raises(MissingWeightsError, match="cannot be read as a weights file"):
        build_feature_extractor("inception", str(bad))


def test_fid_kid_plumbing_with_stand_in_extractor():
    extractor = RandomConvFeatures()
    g = torch.Generator().manual_seed(0)
    same = FidKid(extractor, kid_subset_size=20)
    shifted = FidKid(extractor, kid_subset_size=20)
    for _ in range(24):
        real = torch.rand(3, 24, 24, generator=g) * 0.5
        same.update(real, real=True)
        shifted.update(real, real=True)
        same.update(torch.rand(3, 24, 24, generator=g) * 0.5, real=False)  # same distribution
        shifted.update(torch.rand(3, 24, 24, generator=g) * 0.5 + 0.5, real=False)  # brighter
    near, far = same.compute(), shifted.compute()
    assert far["fid"] > 10 * near["fid"] and far["kid_mean"] > 10 * abs(near["kid_mean"])
    few = FidKid(extractor, kid_subset_size=1000)
    few.update(torch.rand(1, 3, 24, 24), real=True)
    assert few.compute()["fid"] is None  # one image: undefined, not a crash


class Darken(nn.Module):
    """A 'generator' with a known effect: out = in - 0.2 (in [-1, 1] units, i.e. -0.1 in [0, 1])."""

    size_multiple = 4

    def forward(self, x):
        return x - 0.2


def test_evaluate_metrics_values_and_files(tmp_path):
    from conftest import write_images

    write_images(tmp_path / "testA", 3, size=(32, 28))
    write_images(tmp_path / "testB", 3, size=(32, 28), seed=5)
    write_images(tmp_path / "pairedB", 3, size=(32, 28))  # = testA: the fakes are testA darkened by 0.1
    loaded = LoadedGenerators({"a2b": Darken(), "b2a": Darken()}, {"a": 3, "b": 3}, "test", Path("darken.pth"))
    translator = Translator(loaded, device="cpu", tile_size=None)
    result = evaluate(
        translator,
        tmp_path / "testA",
        tmp_path / "testB",
        "a2b",
        RandomConvFeatures(),
        paired_b=tmp_path / "pairedB",
        progress=False,
    )
    m = result["metrics"]["a2b"]
    assert set(m) >= {"fid", "kid_mean", "cycle_psnr", "cycle_ssim", "paired_psnr", "paired_ssim"}
    # paired: |fake - gt| = 0.1 wherever the image is not clipped at 0 -> PSNR close to 20 dB (above: clipped pixels)
    assert 19.5 < m["paired_psnr"] < 23 and m["n_images"] == 3
    assert m["cycle_psnr"] < m["paired_psnr"]  # twice darkened
    json_path, md_path = write_results({"checkpoints": [result]}, tmp_path / "eval")
    assert json.loads(json_path.read_text())["checkpoints"][0]["metrics"]["a2b"]["n_images"] == 3
    assert "| a2b |" in md_path.read_text() and "paired_psnr" in md_path.read_text()


def evaluate_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=["progress=false", *overrides])


def evaluate_run():
    from test_predict import load_script

    return load_script("evaluate").run


def test_evaluate_command_on_a_real_run(tiny_runs, tmp_path):
    root, runs = tiny_runs
    cfg = evaluate_cfg(
        f"ckpt_path={runs[0] / 'checkpoints' / 'last.ckpt'}",
        f"data_root={root}",
        "fid.features=random",
        f"output_dir={tmp_path}",
    )
    (result,) = evaluate_run()(cfg)["checkpoints"]
    assert set(result["metrics"]) == {"a2b", "b2a"} and math.isfinite(result["metrics"]["b2a"]["fid"])
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "metrics.md").is_file()


def test_evaluate_a_run_reports_best_and_last_with_their_epochs(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[1][0], run, ignore=shutil.ignore_patterns("samples"))
    report = evaluate_run()(evaluate_cfg(f"ckpt_path={run}", "fid.enabled=false", "max_images=2"))
    results = report["checkpoints"]
    assert [r["which"] for r in results] == ["best", "last"] and [r["epoch"] for r in results] == [1, 1]
    assert Path(results[0]["checkpoint"]).name.startswith("best") and Path(results[1]["checkpoint"]).name == "last.ckpt"
    table = (run / "eval" / "metrics.md").read_text()  # the run's own test set, report beside the run
    assert "| best | 1 | a2b |" in table and "| last | 1 | b2a |" in table


def test_ground_truth_folders_beside_the_test_set_are_found(tiny_runs, tmp_path):
    from conftest import write_images

    root = tmp_path / "data"
    write_images(root / "testA", 2, size=(24, 24), seed=1)
    write_images(root / "testB", 2, size=(24, 24), seed=2)
    write_images(root / "truthB", 2, size=(24, 24), seed=3)  # ground truth of each testA image, same names
    write_images(root / "truthA", 2, size=(24, 24), seed=4)
    ckpt = tiny_runs[1][0] / "checkpoints" / "last.ckpt"
    run = evaluate_run()
    (auto,) = run(
        evaluate_cfg(f"ckpt_path={ckpt}", f"data_root={root}", "fid.enabled=false", f"output_dir={tmp_path / 'e1'}")
    )["checkpoints"]
    assert "paired_psnr" in auto["metrics"]["a2b"] and "paired_psnr" in auto["metrics"]["b2a"]
    shutil.copytree(root / "testA", tmp_path / "explicit")  # an explicit folder wins over truthB/
    (explicit,) = run(
        evaluate_cfg(
            f"ckpt_path={ckpt}",
            f"data_root={root}",
            "fid.enabled=false",
            f"paired_b={tmp_path / 'explicit'}",
            f"output_dir={tmp_path / 'e2'}",
        )
    )["checkpoints"]
    assert explicit["metrics"]["a2b"]["paired_psnr"] != auto["metrics"]["a2b"]["paired_psnr"]
    assert explicit["metrics"]["b2a"]["paired_psnr"] == auto["metrics"]["b2a"]["paired_psnr"]
    shutil.rmtree(root / "truthA")
    (none,) = run(
        evaluate_cfg(f"ckpt_path={ckpt}", f"data_root={root}", "fid.enabled=false", f"output_dir={tmp_path / 'e3'}")
    )["checkpoints"]
    assert "paired_psnr" not in none["metrics"]["b2a"]


def test_fid_callback_logs_every_n_epochs(train_cfg, tmp_path):
    cfg = train_cfg(
        "trainer.max_epochs=2",
        "callbacks=fid",
        "callbacks.fid.features=random",
        "callbacks.fid.every_n_epochs=2",
        "callbacks.fid.max_images=2",
    )
    metrics = run_training(cfg)
    assert "val/fid_a2b" in metrics and "val/kid_b2a" in metrics
    rows = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("val/fid_a2b")
    logged = [r.split(",")[col] for r in rows[1:] if r.split(",")[col]]
    assert len(logged) == 1  # epoch 2 only, not epoch 1
    off = train_cfg("trainer.max_epochs=1")
    assert "fid" not in off.callbacks  # off by default


def test_fid_monitor_on_epochs_without_fid_is_refused_before_training():
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from cyclegan_lightning.errors import ConfigError
    from cyclegan_lightning.evaluation import FIDCallback

    fid = FIDCallback(every_n_epochs=5, features="random")
    trainer = SimpleNamespace(checkpoint_callbacks=[ModelCheckpoint(monitor="val/fid_a2b", every_n_epochs=1)])
    with pytest.raises(ConfigError, match="model_checkpoint.every_n_epochs=5"):
        fid.setup(trainer, None, "fit")
    trainer.checkpoint_callbacks = [ModelCheckpoint(monitor="val/fid_a2b", every_n_epochs=10)]
    fid.setup(trainer, None, "fit")  # every second FID epoch: fine
    assert fid.extractor is not None


@pytest.fixture(scope="module")
def stand_in_inception(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 at random initialisation, saved like the real weights file."""
    pytest.importorskip("torch_fidelity")
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    original = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    try:
        path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
        torch.save({}, path)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict = original
    torch.save(net.state_dict(), path)
    return path


def test_fid_callback_runs_with_inception_weights(train_cfg, stand_in_inception):
    cfg = train_cfg(
        "trainer.max_epochs=1",
        "callbacks=fid",
        "callbacks.fid.every_n_epochs=1",
        "callbacks.fid.max_images=2",
        f"callbacks.fid.inception_weights={stand_in_inception}",
    )
    metrics = run_training(cfg)
    assert math.isfinite(metrics["val/fid_a2b"]) and math.isfinite(metrics["val/kid_b2a"])
