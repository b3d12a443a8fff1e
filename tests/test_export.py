"""Export: TorchScript (and ONNX when the extra is installed) matches eager, at odd sizes too."""

from __future__ import annotations

import pytest
import torch

from cyclegan_lightning.inference import load_generators
from cyclegan_lightning.inference.export import ExportError, check_export, export_generator
from cyclegan_lightning.networks.padding import translate_padded


def test_torchscript_export_matches_eager(tiny_runs, tmp_path):
    loaded = load_generators(tiny_runs[1][0] / "checkpoints" / "last.ckpt")
    gen = loaded.generators["a2b"]
    path, err = export_generator(gen, "torchscript", tmp_path / "gen.pt")
    assert err < 1e-5
    scripted = torch.jit.load(str(path))
    x = torch.rand(2, 3, 37, 22) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), translate_padded(gen, x), atol=1e-5, rtol=0)

    with torch.no_grad():  # a model that no longer matches its export is caught by the check
        next(gen.parameters()).add_(1.0)
    with pytest.raises(ExportError, match="differs from eager"):
        check_export("torchscript", path, gen, [(16, 16)], 3)


def test_onnx_export_matches_eager(tiny_runs, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    loaded = load_generators(tiny_runs[1][1] / "checkpoints" / "last.ckpt")
    path, err = export_generator(loaded.generators["b2a"], "onnx", tmp_path / "gen.onnx", atol=1e-4)
    assert path.is_file() and err < 1e-4
