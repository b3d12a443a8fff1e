"""The official CUT code's anti-aliased generator layout: an official-layout generator built by the oracle
(tests/reference_cut.py) and saved as its ``latest_net_G.pth`` is recognised, loads with ``strict=True`` into our
ResnetGenerator and computes the same function, its encoder taps included; CycleGAN's defaults are untouched."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import reference_cut as official
import torch
from conftest import compose_train_cfg
from torch import nn

from cyclegan_lightning.errors import CheckpointError
from cyclegan_lightning.inference import Translator, load_generators
from cyclegan_lightning.networks import ResnetGenerator
from cyclegan_lightning.networks.layers import BlurDownsample, BlurUpsample

INSTANCE = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
NCE_LAYERS = [0, 4, 8, 12, 16]  # CUT's default taps
ODD_SIZES = [(37, 23), (9, 17)]


def official_generator(no_antialias: bool = False, no_antialias_up: bool = False, seed: int = 0) -> nn.Module:
    """The official ResnetGenerator (resnet_9blocks, ngf 8 for speed), xavier-initialised as CUT does, with a larger
    gain so that outputs differ clearly between layouts; and biases set, which the init leaves at zero."""
    torch.manual_seed(seed)
    net = official.ResnetGenerator(
        3, 3, 8, INSTANCE, False, 9, no_antialias=no_antialias, no_antialias_up=no_antialias_up
    )
    official.init_weights(net, "xavier", 0.5)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    return net.eval()


@pytest.mark.parametrize(
    ("no_antialias", "no_antialias_up", "down", "up"),
    [
        (False, False, "antialias", "antialias"),
        (False, True, "antialias", "transpose"),
        (True, False, "stride", "antialias"),
    ],
)
def test_official_cut_generator_file_loads_strictly_and_computes_the_official_function(
    tmp_path: Path, no_antialias, no_antialias_up, down, up
):
    theirs = official_generator(no_antialias, no_antialias_up)
    torch.save(theirs.state_dict(), tmp_path / "latest_net_G.pth")  # as the official save_networks writes it

    loaded = load_generators(tmp_path / "latest_net_G.pth")  # detection from the keys, then load_state_dict(strict)
    ours = loaded.generators["a2b"]
    assert (loaded.info["downsample"], loaded.info["upsample"]) == (down, up)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # same keys, in the same order (filt buffers too)
    with torch.no_grad():
        for h, w in ODD_SIZES:
            x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w)) * 2 - 1
            want = theirs(x)
            assert torch.equal(ours(x), want), (h, w)
            taps = ours.encode(x, NCE_LAYERS)
            official_taps = theirs(x, list(NCE_LAYERS), encode_only=True)
            assert len(taps) == len(official_taps) == 5
            for i, (got, expected) in enumerate(zip(taps, official_taps)):
                assert torch.equal(got, expected), f"tap {NCE_LAYERS[i]} at {h}x{w}"
            assert ours.feature_channels(NCE_LAYERS) == [t.shape[1] for t in official_taps]
    # the Translator runs it too, at the image's own size
    translator = Translator(loaded, device="cpu", tile_size=None, backend="eager")
    assert translator.translate_tensor(torch.rand(3, 37, 23)).shape == (3, 37, 23)


def test_default_taps_select_the_modules_the_official_default_does():
    ours = ResnetGenerator(3, 3, ngf=8, n_blocks=9, downsample="antialias", upsample="antialias")
    theirs = official_generator()
    for i in NCE_LAYERS:
        assert type(ours.model[i]).__name__ == type(theirs.model[i]).__name__, i
    assert isinstance(ours.model[7], BlurDownsample) and isinstance(ours.model[11], BlurDownsample)
    assert isinstance(ours.model[21], BlurUpsample) and isinstance(ours.model[25], BlurUpsample)
    assert type(ours.model[12]).__name__ == "ResnetBlock" and type(ours.model[16]).__name__ == "ResnetBlock"
    assert len(ours.model) == len(theirs.model) == 32


def test_cyclegan_default_layout_is_unchanged_and_aa_is_opt_in():
    plain = ResnetGenerator()
    assert not any(isinstance(m, BlurDownsample | BlurUpsample) for m in plain.modules())
    assert not any(k.endswith("filt") for k in plain.state_dict())
    with pytest.raises(ValueError, match="downsample must be one of"):
        ResnetGenerator(downsample="blur")
    with pytest.raises(ValueError, match="upsample must be one of"):
        ResnetGenerator(upsample="blur")


def test_official_anti_aliased_discriminator_is_recognised_as_a_discriminator(tmp_path: Path):
    disc = official.NLayerDiscriminator(3, 8, 3, INSTANCE, no_antialias=False)
    torch.save(disc.state_dict(), tmp_path / "latest_net_D.pth")
    with pytest.raises(CheckpointError, match="is a discriminator"):
        load_generators(tmp_path / "latest_net_D.pth")


def test_cut_experiments_use_the_official_anti_aliased_generator(tmp_path: Path):
    for overrides in (["experiment=horse2zebra_cut"], ["experiment=horse2zebra_cut", "model=fastcut"]):
        gen = compose_train_cfg(overrides, tmp_path, tiny=False).model.generator
        assert (gen.downsample, gen.upsample, gen.n_blocks, gen.ngf) == ("antialias", "antialias", 9, 64)
    gen = compose_train_cfg(["model=cut"], tmp_path, tiny=False).model.generator  # the CUT defaults stay as they were
    assert (gen.downsample, gen.upsample) == ("stride", "transpose")


def test_official_cut_file_converts_to_the_hub_layout_and_back(tmp_path: Path):
    torch.save(official_generator().state_dict(), tmp_path / "latest_net_G.pth")
    translator = Translator.from_checkpoint(tmp_path / "latest_net_G.pth", device="cpu", tile_size=None)
    folder = translator.save_pretrained(tmp_path / "cut_model")
    back = Translator.from_pretrained(folder, device="cpu", tile_size=None)
    x = torch.rand(3, 21, 30)
    assert torch.equal(back.translate_tensor(x), translator.translate_tensor(x))
    assert back.loaded.specs["a2b"]["downsample"] == back.loaded.specs["a2b"]["upsample"] == "antialias"
    assert "# CUT (official code): latest_net_G" in (folder / "README.md").read_text()
