"""Any size in, the same size out; tiled inference agrees with whole-image inference; odd modes keep their alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cyclegan_lightning.inference import LoadedGenerators, Translator
from cyclegan_lightning.inference.tiling import _ramp, tile_starts, translate_tiled
from cyclegan_lightning.networks import ResnetGenerator, init_weights
from cyclegan_lightning.networks.padding import translate_padded

# Tiled vs untiled, stated tolerance (outputs in [-1, 1]; 128-pixel tiles, 64 overlap) for a ResNet with instance
# norm on an image within stats_size (exact shared statistics): the only error left is each tile's cut receptive
# field, hidden by the blending. Measured 0.009 max, 0.0003 mean.
TILED_MAX_ERR = 0.02
TILED_MEAN_ERR = 0.002


def make_translator(norm="instance", in_ch=3, out_ch=3, **kwargs) -> Translator:
    torch.manual_seed(0)
    nets = {
        d: init_weights(ResnetGenerator(in_ch, out_ch, ngf=8, n_blocks=2, norm=norm)).eval() for d in ("a2b", "b2a")
    }
    return Translator(LoadedGenerators(nets, {"a": in_ch, "b": out_ch}, "test", Path("x.pth")), device="cpu", **kwargs)


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A photo-like test image: random low-frequency colour fields plus a little fine noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(1, 3, h // 16 + 2, w // 16 + 2, generator=g), size=(h, w), mode="bicubic")
    return (low + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1) * 2 - 1


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (33, 47), (64, 64), (101, 7)])
def test_odd_sizes_come_back_exact(size):
    translator = make_translator(tile_size=None)
    out = translator.translate_tensor(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size) and 0 <= out.min() and out.max() <= 1


def test_tile_cover_and_blend_weights_sum_to_one():
    for size, tile, overlap in ((300, 128, 32), (129, 64, 16), (64, 64, 16), (1000, 256, 64)):
        starts = tile_starts(size, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == size
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    # two tiles overlapping by exactly `overlap`: weights complementary (each tile's outer quarter weighted 0)
    size, tile, overlap = 112, 64, 16
    total = torch.zeros(size)
    for s in (0, 48):
        total[s : s + tile] += _ramp(tile, s, size, overlap, "cpu")
    torch.testing.assert_close(total, torch.ones(size))


@torch.no_grad()
def test_tiled_matches_untiled_within_tolerance():
    translator = make_translator()
    net = translator.generators["a2b"]
    x = smooth_image(150, 203)
    whole = translate_padded(net, x)
    tiled = translate_tiled(net, x, tile_size=128, overlap=64, batch_size=3, stats_size=1024)
    assert tiled.shape == whole.shape
    err = (tiled - whole).abs()
    assert err.max() < TILED_MAX_ERR and err.mean() < TILED_MEAN_ERR, (err.max(), err.mean())
    # without shared statistics each tile would be normalised alone: much worse (what the shared stats fix)
    naive = torch.zeros_like(whole)
    for y in range(0, 150, 75):
        for x0 in range(0, 203, 102):
            naive[..., y : y + 75, x0 : x0 + 102] = translate_padded(net, x[..., y : y + 75, x0 : x0 + 102])
    assert (naive - whole).abs().mean() > 3 * err.mean()


@torch.no_grad()
def test_tiling_exact_without_instance_norm_and_via_translator():
    translator = make_translator(norm="batch", tile_size=48, tile_overlap=32)
    x = (smooth_image(100, 90) + 1) / 2
    tiled = translator.translate_tensor(x)  # 100 > 48: tiled path
    whole = (translate_padded(translator.generators["a2b"], x * 2 - 1) + 1) / 2
    assert (tiled - whole.clamp(0, 1)).abs().max() < TILED_MAX_ERR


def test_pil_grayscale_and_rgba_like_training():
    translator = make_translator(tile_size=None)
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (21, 30), dtype=np.uint8), "L")
    out = translator(gray)
    assert out.mode == "RGB" and out.size == (30, 21)

    rgba = rng.integers(0, 256, (19, 26, 4), dtype=np.uint8)
    out = translator(Image.fromarray(rgba, "RGBA"), "b2a")
    assert out.mode == "RGBA" and out.size == (26, 19)
    np.testing.assert_array_equal(np.asarray(out)[..., 3], rgba[..., 3])  # alpha carried over unchanged


def test_one_channel_domain_and_bf16():
    translator = make_translator(in_ch=1, out_ch=1, precision="bf16", tile_size=None)
    out = translator(Image.fromarray(np.zeros((12, 17, 3), np.uint8), "RGB"))
    assert out.mode == "L" and out.size == (17, 12)
    fp32 = make_translator(tile_size=None)
    bf16 = make_translator(precision="bf16", tile_size=None)
    x = torch.rand(1, 3, 32, 32)
    assert (fp32.translate_tensor(x) - bf16.translate_tensor(x)).abs().max() < 0.1
