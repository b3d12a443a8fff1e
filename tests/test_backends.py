"""Translator backends (eager, torch.compile, ONNX Runtime, fastconv) agree with eager fp32 within one grey level, at
any image size (padding) and with tiling; the exported graph runs down to 1x1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_lightning.data.images import LoadedImage
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.inference import LoadedGenerators, Translator, fastconv, to_pil
from cyclegan_lightning.inference.export import export_generator
from cyclegan_lightning.networks import ResnetGenerator, UnetGenerator, init_weights

SIZES = [(3, 5), (37, 22), (40, 40)]  # tiny (replicate padding), odd (reflect padding), a multiple (none)


def translator(backend: str, arch: str = "resnet", ngf: int = 8, **kwargs) -> Translator:
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, ngf=ngf, n_blocks=2) if arch == "resnet" else UnetGenerator(3, 3, num_downs=5, ngf=ngf)
    loaded = LoadedGenerators({"a2b": init_weights(net).eval()}, {"a": 3, "b": 3}, "test", Path("x.pth"))
    return Translator(loaded, device="cpu", backend=backend, **kwargs)


def photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Photo-like [0, 1] image: smooth colour fields plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g), size=(h, w), mode="bilinear")
    return (low[0] + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1)


def grey_levels(t: torch.Tensor) -> np.ndarray:
    return np.asarray(to_pil(LoadedImage(t)), dtype=np.int16)


def assert_within_one_grey_level(backend: str, arch: str = "resnet", sizes=SIZES, **kwargs) -> None:
    eager, other = translator("eager", arch, **kwargs), translator(backend, arch, **kwargs)
    assert other.backend == backend
    for h, w in sizes:
        x = photo(h, w, seed=h * w)
        want, got = grey_levels(eager.translate_tensor(x)), grey_levels(other.translate_tensor(x))
        assert got.shape == want.shape == (h, w, 3)
        assert np.abs(got - want).max() <= 1, (backend, h, w)


@pytest.mark.parametrize("arch", ["resnet", "unet"])
def test_onnxruntime_matches_eager(arch):
    pytest.importorskip("onnxruntime")
    assert_within_one_grey_level("onnxruntime", arch)


def test_compile_matches_eager_and_compiles_once_per_shape(monkeypatch):
    """On a CPU in fp32, ``compile`` compiles the fastconv graph with its weights frozen."""
    import torch._inductor.freezing
    from torch._dynamo.utils import counters

    frozen = []
    real_freeze = torch._inductor.freezing.freeze
    monkeypatch.setattr(torch._inductor.freezing, "freeze", lambda *a, **k: frozen.append(1) or real_freeze(*a, **k))
    assert_within_one_grey_level("compile", sizes=[(13, 9)])  # one shape: compiling costs tens of seconds here
    t = translator("compile")
    runner = t._runner("a2b")
    assert fastconv.WinogradConv3x3 in {type(m) for m in runner.module.modules()}  # 32-channel blocks: Winograd
    t.translate_tensor(photo(13, 9, seed=4))
    compiled = counters["stats"]["unique_graphs"]
    t.translate_tensor(photo(13, 9, seed=5))  # same shape, another image: the compiled graph is reused
    assert compiled > 0 and counters["stats"]["unique_graphs"] == compiled
    assert frozen  # the weights were frozen into the compiled graph


@pytest.mark.parametrize("size", [(3, 3), (4, 4), (5, 9), (18, 13)])
@pytest.mark.parametrize("bias", [True, False])
def test_fastconv_layers_match_the_convolutions(size, bias):
    """Winograd F(4x4, 3x3) and the shift-add form give the convolution's output (fp32 rounding), at sizes that are
    and are not multiples of the 4x4 tile, down to a single output pixel."""
    torch.manual_seed(0)
    x = torch.randn(2, 32, size[0] + 2, size[1] + 2)
    conv = nn.Conv2d(32, 40, 3, bias=bias)
    last = nn.Conv2d(32, 3, 7 if min(size) >= 5 else 3, bias=bias)
    with torch.no_grad():
        for plain, fast in ((conv, fastconv.WinogradConv3x3(conv)), (last, fastconv.ShiftAddConv(last))):
            want = plain(x)
            got = fast(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))


def test_fastconv_matches_eager():
    assert_within_one_grey_level("fastconv", ngf=16)  # ngf 16: the residual blocks have 64 channels
    runner = translator("fastconv", ngf=16)._runner("a2b")
    kinds = [type(m) for m in runner.modules()]
    assert kinds.count(fastconv.WinogradConv3x3) == 4 and kinds.count(fastconv.ShiftAddConv) == 1  # 2 blocks x 2


@pytest.mark.parametrize("backend", ["onnxruntime", "compile", "fastconv"])
def test_backends_work_with_tiling(backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    tiled = {"tile_size": 32, "tile_overlap": 8}
    assert_within_one_grey_level(backend, sizes=[(50, 70)], **tiled)


def test_auto_picks_fastconv_on_cpu_fp32_only():
    assert translator("auto").backend == "fastconv"
    assert translator("auto", precision="bf16").backend == "eager"  # fastconv runs fp32 only
    for backend in ("onnxruntime", "fastconv"):
        with pytest.raises(ConfigError, match=f"backend={backend} runs fp32"):
            translator(backend, precision="bf16")
    with pytest.raises(ConfigError, match="translator.backend must be one of"):
        translator("tensorrt")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_runs_at_tiny_sizes(tmp_path, fmt):
    """Issue 11: an exported ResNet failed below its bottleneck's 2x2; now the graph pads up and crops back."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from cyclegan_lightning.inference.export import _run_exported

    torch.manual_seed(0)
    gen = init_weights(ResnetGenerator(3, 3, ngf=8, n_blocks=2)).eval()
    path, err = export_generator(gen, fmt, tmp_path / f"g.{fmt}", check_sizes=[(1, 5), (2, 2), (4, 4), (4, 9)])
    assert err < 1e-4
    assert _run_exported(fmt, path, torch.zeros(1, 3, 1, 1)).shape == (1, 3, 1, 1)
