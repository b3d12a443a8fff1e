"""CUT / FastCUT: one training step against a hand computation with the official loss, who owns which parameters,
F saved / restored / trained, and configuration errors."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import reference_cut as ref
import torch
import torch.nn.functional as F
from probes import bare_trainer
from torch import nn
from torch.utils.data import DataLoader

from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.models import CUT

GEN = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 2}
DISC = {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4, "n_layers": 2}
LAYERS = [0, 4, 8, 10, 11]  # padded input, first down-conv, second down-conv's norm, both residual blocks
SIDE = 16


def tiny_cut(**kwargs) -> CUT:
    return CUT(generator=GEN, discriminator=DISC, nce_layers=LAYERS, num_patches=8, projection_dim=16, **kwargs)


def batch(batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.rand(batch_size, 3, SIDE, SIDE, generator=g) * 2 - 1 for _ in range(2))
    return {"a": a, "b": b}


def fit_one_step(model: CUT, data: dict[str, torch.Tensor]) -> None:
    loader = DataLoader([{"a": data["a"][i], "b": data["b"][i]} for i in range(len(data["a"]))], batch_size=99)
    bare_trainer(max_epochs=1).fit(model, train_dataloaders=loader)


def official_nce(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    opt = SimpleNamespace(nce_includes_all_negatives_from_minibatch=False, batch_size=q.shape[0], nce_T=0.07)
    return ref.PatchNCELoss(opt)(q.flatten(0, 1), k.flatten(0, 1)).mean()


def hand_step(model: CUT, data: dict, rng: torch.Generator) -> dict[str, nn.Module]:
    """The official optimize_parameters, written out with plain torch ops on copies of the networks."""
    hp = model.hparams
    g, d, f = (copy.deepcopy(n) for n in (model.gen_a2b, model.disc_b, model.proj))
    opt_g, opt_d, opt_f = (torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n in (g, d, f))
    real_a, real_b = data["a"], data["b"]
    real = torch.cat((real_a, real_b)) if hp.nce_idt else real_a
    flipped = hp.flip_equivariance and bool(torch.rand((), generator=rng) < 0.5)
    fake = g(real.flip(3) if flipped else real)
    n = real_a.shape[0]
    fake_b, idt_b = fake[:n], fake[n:]

    pred_fake, pred_real = d(fake_b.detach()), d(real_b)
    loss_d = 0.5 * (F.mse_loss(pred_fake, torch.zeros_like(pred_fake)) + F.mse_loss(pred_real, torch.ones_like(pred_real)))
    loss_d.backward()
    opt_d.step()

    def nce(src, tgt):
        feat_q = [x.flip(3) if flipped else x for x in g.encode(tgt, LAYERS)]
        feat_k = g.encode(src, LAYERS)
        total = 0.0
        for i, (fq, fk) in enumerate(zip(feat_q, feat_k)):
            ids = torch.randperm(fk.shape[2] * fk.shape[3], generator=rng)[:8]
            mlp = getattr(f, f"mlp_{i}")
            pick = lambda x: mlp(x.permute(0, 2, 3, 1).flatten(1, 2)[:, ids])  # noqa: E731
            q, k = pick(fq), pick(fk)
            q, k = q / (q.norm(dim=-1, keepdim=True) + 1e-7), k / (k.norm(dim=-1, keepdim=True) + 1e-7)
            total = total + official_nce(q, k) * hp.lambda_nce
        return total / len(LAYERS)

    for p in d.parameters():
        p.requires_grad_(False)
    pred = d(fake_b)
    loss_g = F.mse_loss(pred, torch.ones_like(pred))
    nce_a = nce(real_a, fake_b)
    loss_g = loss_g + (0.5 * (nce_a + nce(real_b, idt_b)) if hp.nce_idt else nce_a)
    loss_g.backward()
    opt_g.step()
    opt_f.step()
    return {"gen_a2b": g, "disc_b": d, "proj": f}


@pytest.mark.parametrize(
    "preset",
    [
        {},  # CUT: lambda_NCE 1, NCE identity
        {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True},  # FastCUT
    ],
    ids=["cut", "fastcut"],
)
def test_one_step_equals_the_hand_computed_official_step(preset):
    torch.manual_seed(0)
    model = tiny_cut(**preset)
    seed = 0
    while preset.get("flip_equivariance") and not torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5:
        seed += 1  # FastCUT: a seed whose first draw flips, so the flip-back path is exercised
    model.patch_rng.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    data = batch()
    expected = hand_step(model, data, rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_one_step(model, data)
    for name, net in expected.items():
        for key, value in net.state_dict().items():
            got = getattr(model, name).state_dict()[key]
            assert not torch.equal(got, before[f"{name}.{key}"]) or not value.is_floating_point(), f"{name}.{key}"
            torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-7, msg=f"{name}.{key}")


def test_each_optimizer_owns_exactly_its_networks_parameters():
    model = tiny_cut()
    opt_g, opt_d, opt_f = model.configure_optimizers()[0]
    owned = [{id(p) for group in opt.param_groups for p in group["params"]} for opt in (opt_g, opt_d, opt_f)]
    nets = [model.gen_a2b, model.disc_b, model.proj]
    for ids, net in zip(owned, nets, strict=True):
        assert ids == {id(p) for p in net.parameters()}
    assert {id(p) for p in model.parameters()} == set().union(*owned)


def test_projection_head_is_saved_restored_and_trained(tmp_path):
    torch.manual_seed(0)
    model = tiny_cut()
    before = {k: v.clone() for k, v in model.proj.state_dict().items()}
    assert len(before) == 2 * 2 * len(LAYERS)  # mlp_i.{0,2}.{weight,bias}, built before any data
    trainer = bare_trainer(max_epochs=1, enable_checkpointing=False)
    data = batch()
    loader = DataLoader([{"a": data["a"][i], "b": data["b"][i]} for i in range(2)], batch_size=2)
    trainer.fit(model, train_dataloaders=loader)
    for key, value in model.proj.state_dict().items():
        assert not torch.equal(value, before[key]), f"F's {key} was not trained"
    path = tmp_path / "cut.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {k for k in state["state_dict"] if k.startswith("proj.")} == {f"proj.{k}" for k in before}
    assert len(state["optimizer_states"]) == 3 and len(state["optimizer_states"][2]["state"]) == len(before)
    loaded = CUT.load_from_checkpoint(path)
    for key, value in model.proj.state_dict().items():
        assert torch.equal(loaded.proj.state_dict()[key], value)


def test_patchnce_of_a_translation_equal_to_its_input_is_low_and_of_shuffled_pixels_is_high():
    torch.manual_seed(0)
    model = tiny_cut()
    real = batch()["a"]
    shuffled = real.flatten(2)[:, :, torch.randperm(SIDE * SIDE)].view_as(real)
    same, other = model.nce_loss(real, real).item(), model.nce_loss(real, shuffled).item()
    chance = math.log(8)  # 8 patches, every logit equal
    assert same < 0.5 * chance < other, (same, other)


def test_only_resnet_generators_and_encoder_layers_are_accepted():
    unet = {"_target_": "cyclegan_lightning.networks.UnetGenerator", "num_downs": 4, "ngf": 4}
    with pytest.raises(ConfigError, match="ResNet generator"):
        CUT(generator=unet, discriminator=DISC)
    with pytest.raises(ConfigError, match="model.nce_layers"):
        CUT(generator=GEN, discriminator=DISC, nce_layers=[0, 4, 99])
