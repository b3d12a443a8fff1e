"""Our networks against the reference implementation's own classes (tests/reference_networks.py, unchanged code).

For every norm the reference offers, a network built by the reference is saved as the reference saves it; ours
must load that file with ``strict=True`` (through the same loader ``predict.py`` uses) and compute the same output.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import reference_networks as ref
import torch

from cyclegan_lightning.checkpoints.generators import load_generators
from cyclegan_lightning.models.schedulers import build_scheduler
from cyclegan_lightning.networks import NLayerDiscriminator, PixelDiscriminator, ResnetGenerator, UnetGenerator

NORMS = ("instance", "batch", "none")


def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Large random weights and biases, so a missing or extra bias changes the output visibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return net.eval()


def same_output(ours: torch.nn.Module, theirs: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), atol=0, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_reference_resnet_file_loads_and_matches_the_reference(tmp_path: Path, norm: str):
    theirs = randomised(ref.ResnetGenerator(3, 3, ngf=4, norm_layer=ref.get_norm_layer(norm), n_blocks=3), 1)
    torch.save(theirs.state_dict(), tmp_path / "latest_net_G_A.pth")  # as the reference's save_networks does
    loaded = load_generators(tmp_path / "latest_net_G_A.pth")
    assert loaded.info["norm"] == norm  # told apart by the keys alone: none has no conv biases, instance has
    same_output(loaded.generators["a2b"], theirs, (2, 3, 24, 20))
    ours = ResnetGenerator(3, 3, ngf=4, n_blocks=3, norm=norm)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("norm", NORMS)
def test_reference_unet_file_loads_and_matches_the_reference(tmp_path: Path, norm: str):
    theirs = randomised(ref.UnetGenerator(3, 3, 5, ngf=4, norm_layer=ref.get_norm_layer(norm)), 2)
    torch.save(theirs.state_dict(), tmp_path / "latest_net_G.pth")
    loaded = load_generators(tmp_path / "latest_net_G.pth")
    assert loaded.info["norm"] == norm and loaded.info["num_downs"] == 5
    same_output(loaded.generators["a2b"], theirs, (2, 3, 32, 32))
    ours = UnetGenerator(3, 3, num_downs=5, ngf=4, norm=norm)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("norm", NORMS)
def test_discriminators_have_the_reference_layout_and_output(norm: str):
    for ours, theirs in (
        (
            NLayerDiscriminator(3, ndf=4, n_layers=3, norm=norm),
            ref.NLayerDiscriminator(3, 4, 3, ref.get_norm_layer(norm)),
        ),
        (PixelDiscriminator(3, ndf=4, norm=norm), ref.PixelDiscriminator(3, 4, ref.get_norm_layer(norm))),
    ):
        theirs = randomised(theirs, 3)
        ours.load_state_dict(theirs.state_dict(), strict=True)
        same_output(ours, theirs, (2, 3, 40, 40))


@pytest.mark.parametrize("policy", ["linear", "cosine", "step"])
def test_lr_policies_follow_the_reference_scheduler(policy: str):
    """The LR of every epoch equals the reference's ``get_scheduler`` under the same option name."""
    opt = SimpleNamespace(lr_policy=policy, n_epochs=4, n_epochs_decay=3, epoch_count=1, lr_decay_iters=2)

    def lrs(make) -> list[float]:
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
        scheduler, out = make(optimizer), []
        for _ in range(opt.n_epochs + opt.n_epochs_decay):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    ours = lrs(lambda o: build_scheduler(o, policy, opt.n_epochs, opt.n_epochs_decay, opt.lr_decay_iters, 0.1))
    assert ours == pytest.approx(lrs(lambda o: ref.get_scheduler(o, opt)), rel=1e-12, abs=1e-15)
