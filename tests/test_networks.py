"""Networks match the reference implementation: parameter counts, state-dict layout, output sizes, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cyclegan_lightning.networks import (
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    init_weights,
    output_size,
)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_default_parameter_counts_match_reference():
    assert n_params(ResnetGenerator(3, 3, ngf=64, n_blocks=9)) == 11_378_179
    assert n_params(NLayerDiscriminator(3, ndf=64, n_layers=3)) == 2_764_737


def test_resnet_state_dict_keys_follow_reference_layout():
    keys = set(ResnetGenerator(3, 3, ngf=8, n_blocks=9).state_dict())
    for i in (1, 4, 7, 19, 22, 26):
        assert {f"model.{i}.weight", f"model.{i}.bias"} <= keys
    for block in range(10, 19):
        assert {f"model.{block}.conv_block.1.weight", f"model.{block}.conv_block.5.weight"} <= keys
    assert ResnetGenerator(3, 3, ngf=8).state_dict()["model.19.weight"].shape == (32, 16, 3, 3)  # (in, out, k, k)
    dropout_keys = set(ResnetGenerator(3, 3, ngf=8, use_dropout=True).state_dict())
    assert "model.10.conv_block.6.weight" in dropout_keys and "model.10.conv_block.5.weight" not in dropout_keys


def test_discriminator_state_dict_keys_follow_reference_layout():
    keys = {k.rsplit(".", 1)[0] for k in NLayerDiscriminator(3, ndf=8).state_dict()}
    assert keys == {"model.0", "model.2", "model.5", "model.8", "model.11"}


@pytest.mark.parametrize("side", [32, 30, 33, 37, 9])
def test_resnet_output_side_is_input_rounded_up_to_multiple_of_4(side):
    net = ResnetGenerator(3, 3, ngf=4, n_blocks=1)
    out = net(torch.randn(1, 3, side, side + 3))
    assert out.shape[-2:] == (output_size(side, 4), output_size(side + 3, 4))
    assert out.shape[-2] == 4 * math.ceil(side / 4)


def test_patchgan_gives_30x30_map_on_256_and_pixel_gan_keeps_size():
    assert NLayerDiscriminator(3, ndf=4)(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert PixelDiscriminator(3, ndf=4)(torch.randn(2, 3, 17, 9)).shape == (2, 1, 17, 9)


@pytest.mark.parametrize("num_downs,side", [(7, 128), (8, 256)])
def test_unet_presets_map_size_to_size_and_channels(num_downs, side):
    net = UnetGenerator(3, 1, num_downs=num_downs, ngf=4, norm="batch").eval()
    assert net.size_multiple == side
    out = net(torch.randn(1, 3, side, side))
    assert out.shape == (1, 1, side, side)
    assert out.abs().max() <= 1.0  # tanh output


def test_norm_choice_controls_bias_and_norm_layers():
    batch = ResnetGenerator(3, 3, ngf=4, n_blocks=1, norm="batch")
    inst = ResnetGenerator(3, 3, ngf=4, n_blocks=1, norm="instance")
    none = ResnetGenerator(3, 3, ngf=4, n_blocks=1, norm="none")
    assert batch.model[1].bias is None and isinstance(batch.model[2], nn.BatchNorm2d)
    assert inst.model[1].bias is not None and isinstance(inst.model[2], nn.InstanceNorm2d)
    assert none.model[1].bias is None and isinstance(none.model[2], nn.Identity)  # as the reference: no bias either
    with pytest.raises(ValueError, match="norm"):
        ResnetGenerator(norm="group")


def test_dropout_is_active_in_train_mode_only():
    net = ResnetGenerator(3, 3, ngf=4, n_blocks=2, use_dropout=True)
    x = torch.randn(1, 3, 16, 16)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_init_types():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.Linear(256, 128))
    init_weights(net, "normal", 0.02)
    assert net[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert net[0].bias.abs().sum() == 0
    assert net[1].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    init_weights(net, "orthogonal", 1.5)
    w = net[2].weight  # (128, 256): rows orthonormal, scaled by the gain
    assert torch.allclose(w @ w.T, 1.5**2 * torch.eye(128), atol=1e-4)
    init_weights(net, "kaiming")
    fan_in = 64 * 9
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    init_weights(net, "xavier", 1.0)
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_in)), rel=0.05)
    with pytest.raises(ValueError, match="init_type"):
        init_weights(net, "uniform")
