"""Evaluation: the Inception file is checked before any metric is built; FID/KID plumbing with a stand-in feature
extractor (never a download); PSNR/SSIM values; JSON + Markdown; the optional FID callback logs like other metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT
from cyclegan_lightning.evaluation import (
    FidKid,
    MissingWeightsError,
    RandomConvFeatures,
    build_feature_extractor,
    evaluate,
    write_results,
)
from cyclegan_lightning.evaluation.metrics import INCEPTION_FILE
from cyclegan_lightning.inference import LoadedGenerators, Translator
from cyclegan_lightning.training import run_training


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
    result = evaluate(translator, tmp_path / "testA", tmp_path / "testB", "a2b", RandomConvFeatures(),
                      paired_b=tmp_path / "pairedB", progress=False)  # fmt: skip
    m = result["metrics"]["a2b"]
    assert set(m) >= {"fid", "kid_mean", "cycle_psnr", "cycle_ssim", "paired_psnr", "paired_ssim"}
    # paired: |fake - gt| = 0.1 wherever the image is not clipped at 0 -> PSNR close to 20 dB (above: clipped pixels)
    assert 19.5 < m["paired_psnr"] < 23 and m["n_images"] == 3
    assert m["cycle_psnr"] < m["paired_psnr"]  # twice darkened
    json_path, md_path = write_results(result, tmp_path / "eval")
    assert json.loads(json_path.read_text())["metrics"]["a2b"]["n_images"] == 3
    assert "| a2b |" in md_path.read_text() and "paired_psnr" in md_path.read_text()


def test_evaluate_command_on_a_real_run(tiny_runs, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from test_predict import load_script

    run = load_script("evaluate").run

    root, runs = tiny_runs
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={runs[0] / 'checkpoints' / 'last.ckpt'}", f"data_root={root}",
                                             "fid.features=random", f"output_dir={tmp_path}", "progress=false"])  # fmt: skip
    result = run(cfg)
    assert set(result["metrics"]) == {"a2b", "b2a"} and math.isfinite(result["metrics"]["b2a"]["fid"])
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "metrics.md").is_file()


def test_fid_callback_logs_every_n_epochs(train_cfg, tmp_path):
    cfg = train_cfg("trainer.max_epochs=2", "callbacks=fid", "callbacks.fid.features=random",
                    "callbacks.fid.every_n_epochs=2", "callbacks.fid.max_images=2")  # fmt: skip
    metrics = run_training(cfg)
    assert "val/fid_a2b" in metrics and "val/kid_b2a" in metrics
    rows = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("val/fid_a2b")
    logged = [r.split(",")[col] for r in rows[1:] if r.split(",")[col]]
    assert len(logged) == 1  # epoch 2 only, not epoch 1
    off = train_cfg("trainer.max_epochs=1")
    assert "fid" not in off.callbacks  # off by default
