"""LPIPS: torchmetrics' network with its shipped heads and a backbone fetched through our downloader computes what
torchmetrics computes with torchvision's own loading; it goes through the one cache and the offline switch; evaluate
reports cycle and paired LPIPS, and goes on without it (saying why) when the weights cannot be had."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torchvision
from local_http import local_server

from cyclegan_lightning.evaluation.lpips import LPIPS, MissingLpipsWeightsError, lpips_metric


def alexnet_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's AlexNet state_dict layout (the features; the classifier LPIPS never uses is left out)."""
    torch.manual_seed(seed)
    state = torchvision.models.alexnet(weights=None).state_dict()
    return {k: v for k, v in state.items() if k.startswith("features.")}


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lpips") / "alexnet-owt-7be5be79.pth"
    torch.save(alexnet_features(), path)
    return path


def images(seed: int, n: int = 2, size: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lpips_matches_torchmetrics_with_the_same_backbone(backbone_file, monkeypatch):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    ours = LPIPS("alex", backbone_file)
    x, y = images(1), images(2)

    build_alexnet = torchvision.models.alexnet

    def torchvision_alexnet(weights=None):  # what torchvision would download: here, the same file
        net = build_alexnet(weights=None)
        net.load_state_dict(torch.load(backbone_file, weights_only=True), strict=False)
        return net

    monkeypatch.setattr(torchvision.models, "alexnet", torchvision_alexnet)
    oracle = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="mean")
    expected = oracle(x, y)
    assert torch.allclose(ours(x, y).mean(), expected, atol=1e-6)
    assert float(expected) > 0.01  # two random images are far apart
    assert torch.equal(ours(x, x), torch.zeros(2))  # an image and itself: 0
    closer = ours(x, (x + 0.05 * images(3)).clamp(-1, 1))
    assert bool((closer < ours(x, y)).all())  # a small perturbation is closer than another image
    small = images(6, size=24)  # under AlexNet's minimum: upscaled, not an error
    assert ours(small, images(7, size=24)).shape == (2,)


def test_a_file_that_is_not_the_backbone_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1)}, bad)
    with pytest.raises(MissingLpipsWeightsError, match="not torchvision's alex"):
        LPIPS("alex", bad)
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(MissingLpipsWeightsError, match="cannot be read"):
        LPIPS("alex", bad)


def test_the_backbone_comes_through_the_downloader_and_its_offline_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE", str(tmp_path / "cache"))
    buffer = io.BytesIO()
    torch.save(alexnet_features(), buffer)
    with local_server() as server:
        server.files["/metric-weights/alexnet-owt-7be5be79.pth"] = buffer.getvalue()
        monkeypatch.setenv("CYCLEGAN_MIRROR", f"{server.url}/")
        monkeypatch.setenv("CYCLEGAN_OFFLINE", "1")
        metric, why = lpips_metric("auto")
        assert metric is None and "CYCLEGAN_OFFLINE=1" in why and server.requests == []
        with pytest.raises(MissingLpipsWeightsError):
            lpips_metric(True)
        assert lpips_metric(False) == (None, "lpips.enabled=false")
        monkeypatch.setenv("CYCLEGAN_OFFLINE", "0")
        metric, why = lpips_metric("auto")
        assert why is None and server.requests == ["/metric-weights/alexnet-owt-7be5be79.pth"]
        assert (tmp_path / "cache").rglob("alexnet-owt-7be5be79.pth")
        lpips_metric("auto")  # a second build uses the cache
        assert len(server.requests) == 1
    direct = tmp_path / "direct.pth"
    direct.write_bytes(buffer.getvalue())
    x, y = images(4), images(5)
    assert torch.equal(metric(x, y), LPIPS("alex", direct)(x, y))


def test_evaluate_reports_cycle_and_paired_lpips_or_says_why_not(tiny_runs, tmp_path, backbone_file):
    from conftest import write_images
    from test_evaluation import evaluate_cfg, evaluate_run

    root = tmp_path / "data"
    write_images(root / "testA", 2, size=(24, 24), seed=1)
    write_images(root / "testB", 2, size=(24, 24), seed=2)
    write_images(root / "truthB", 2, size=(24, 24), seed=3)
    ckpt = tiny_runs[1][0] / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={ckpt}", f"data_root={root}", "fid.enabled=false"]
    report = evaluate_run()(evaluate_cfg(*common, f"lpips.weights={backbone_file}", f"output_dir={tmp_path / 'e1'}"))
    metrics = report["checkpoints"][0]["metrics"]
    assert metrics["a2b"]["paired_lpips"] > 0 and metrics["a2b"]["cycle_lpips"] > 0
    assert "paired_lpips" not in metrics["b2a"] and metrics["b2a"]["cycle_lpips"] > 0  # no truthA: no paired
    assert "paired_lpips" in (tmp_path / "e1" / "metrics.md").read_text()
    report = evaluate_run()(evaluate_cfg(*common, f"output_dir={tmp_path / 'e2'}"))  # offline, empty cache
    assert "CYCLEGAN_OFFLINE=1" in report["lpips_missing"]
    assert "cycle_lpips" not in report["checkpoints"][0]["metrics"]["a2b"]
    assert "LPIPS not computed" in (tmp_path / "e2" / "metrics.md").read_text()
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["lpips_missing"] == report["lpips_missing"]
