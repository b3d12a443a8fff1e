"""Checkpoint detection and loading: our .ckpt and the reference's bare generator state_dicts, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import reference_networks as ref
import torch

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.errors import CheckpointError, CycleGANError
from cyclegan_lightning.inference import Translator, load_generators
from cyclegan_lightning.networks import NLayerDiscriminator, ResnetGenerator, UnetGenerator, init_weights


def seeded(net, seed=0):
    torch.manual_seed(seed)
    init_weights(net, "normal", 0.2)  # larger than default so outputs differ clearly between networks
    return net.eval()


@pytest.mark.parametrize("dropout", [False, True])
def test_reference_resnet_state_dict_loads_and_matches_our_module(tmp_path: Path, dropout: bool):
    # written by the reference implementation's own class (tests/reference_networks.py), as its save_networks does
    g_a, g_b = (seeded(ref.ResnetGenerator(3, 3, 4, ref.get_norm_layer("instance"), dropout, 9), s) for s in (1, 2))
    torch.save(g_a.state_dict(), tmp_path / "latest_net_G_A.pth")
    torch.save(g_b.state_dict(), tmp_path / "latest_net_G_B.pth")

    translator = Translator.from_checkpoint(tmp_path / "latest_net_G_A.pth", device="cpu", tile_size=None)
    assert translator.directions == ("a2b", "b2a")  # G_B beside G_A picked up
    assert translator.loaded.info["n_blocks"] == 9 and translator.loaded.info["use_dropout"] == dropout

    spec = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 9, "use_dropout": dropout}
    model = CycleGAN(spec, {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4}).eval()
    model.gen_a2b.load_state_dict(g_a.state_dict())
    model.gen_b2a.load_state_dict(g_b.state_dict())
    x = torch.rand(2, 3, 32, 24)  # sides the reference network accepts as they are
    with torch.no_grad():
        for d, theirs in (("a2b", g_a), ("b2a", g_b)):
            want = (theirs(x * 2 - 1) + 1) / 2  # the reference network's own output
            torch.testing.assert_close(model(x * 2 - 1, d), theirs(x * 2 - 1), atol=0, rtol=0)
            torch.testing.assert_close(translator.translate_tensor(x, d), want.clamp(0, 1), atol=1e-5, rtol=0)
    a2b, b2a = translator.translate_tensor(x, "a2b"), translator.translate_tensor(x, "b2a")
    assert (a2b - b2a).abs().max() > 1e-3  # the two files really are different generators


def test_single_reference_generator_and_old_instance_norm_stats(tmp_path: Path):
    net = seeded(ResnetGenerator(1, 3, ngf=4, n_blocks=2))
    state = dict(net.state_dict())
    state["model.2.running_mean"] = torch.zeros(4)  # PyTorch < 0.4 saved these for InstanceNorm; reference drops them
    torch.save(state, tmp_path / "latest_net_G.pth")
    loaded = load_generators(tmp_path / "latest_net_G.pth")
    assert list(loaded.generators) == ["a2b"] and loaded.channels == {"a": 1, "b": 3}
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.generators["a2b"](x), net(x))
    with pytest.raises(CycleGANError, match="no b2a generator"):
        Translator(loaded, device="cpu").translate_tensor(torch.rand(1, 16, 16), "b2a")


def test_reference_unet_detected(tmp_path: Path):
    net = seeded(UnetGenerator(3, 3, num_downs=6, ngf=4, norm="batch"))
    torch.save(net.state_dict(), tmp_path / "pix2pix_net_G.pth")
    loaded = load_generators(tmp_path / "pix2pix_net_G.pth")
    assert loaded.info["arch"] == "unet" and loaded.info["num_downs"] == 6 and loaded.info["norm"] == "batch"
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(loaded.generators["a2b"](x), net(x))
    out = Translator(loaded, device="cpu").translate_tensor(torch.rand(3, 50, 70))
    assert out.shape == (3, 50, 70)  # padded to 64 multiples and cropped back


def test_lightning_checkpoint_matches_load_from_checkpoint(tiny_runs):
    _, runs = tiny_runs
    ckpt = runs[0] / "checkpoints" / "last.ckpt"
    translator = Translator.from_checkpoint(ckpt, device="cpu")
    model = CycleGAN.load_from_checkpoint(ckpt, map_location="cpu").eval()
    x = torch.rand(1, 3, 27, 35)
    with torch.no_grad():
        want = ((model(x * 2 - 1, "b2a") + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(translator.translate_tensor(x, "b2a"), want, atol=1e-5, rtol=0)


def assert_short(exc: CheckpointError, path: Path):
    msg = str(exc)
    assert str(path) in msg and len(msg) < 450 and "Missing key" not in msg and "Unexpected key" not in msg


def test_wrong_files_get_clear_errors(tmp_path: Path):
    disc = tmp_path / "latest_net_D_A.pth"
    torch.save(NLayerDiscriminator(3, ndf=4).state_dict(), disc)
    with pytest.raises(CheckpointError, match="is a discriminator") as info:
        load_generators(disc)
    assert_short(info.value, disc)

    unet = tmp_path / "latest_net_G.pth"
    torch.save(UnetGenerator(3, 3, num_downs=5, ngf=4).state_dict(), unet)
    with pytest.raises(CheckpointError, match="U-Net .pix2pix. generator, but arch=resnet") as info:
        load_generators(unet, arch="resnet")
    assert_short(info.value, unet)

    good = tmp_path / "good_net_G.pth"
    torch.save(ResnetGenerator(3, 3, ngf=4, n_blocks=2).state_dict(), good)
    truncated = tmp_path / "truncated_net_G.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_generators(truncated)
    assert_short(info.value, truncated)

    damaged = tmp_path / "damaged_net_G.pth"
    state = ResnetGenerator(3, 3, ngf=4, n_blocks=2).state_dict()
    del state["model.10.conv_block.1.weight"]
    torch.save(state, damaged)
    with pytest.raises(CheckpointError, match="does not fit") as info:
        load_generators(damaged)
    assert_short(info.value, damaged)

    pickled = tmp_path / "model.pth"
    torch.save({"net": ResnetGenerator(3, 3, ngf=4, n_blocks=1)}, pickled)  # a whole pickled module: not loaded
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_generators(pickled)

    image = tmp_path / "photo.pth"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not a PyTorch file"):
        load_generators(image)
    with pytest.raises(CheckpointError, match="no such file"):
        load_generators(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="empty"):
        (tmp_path / "empty.pth").write_bytes(b"")
        load_generators(tmp_path / "empty.pth")
