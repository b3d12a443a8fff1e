"""CUT / FastCUT: one training step against a hand computation with the official loss, who owns which parameters,
F saved / restored / trained, and configuration errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import reference_cut as ref
import torch
import torch.nn.functional as F
from conftest import CONF_DIR, compose_train_cfg, make_dataset
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from probes import bare_trainer
from test_evaluation import evaluate_cfg, evaluate_run
from test_predict import load_script, predict, predict_cfg
from test_resume import _assert_same_training_state, _load
from torch import nn
from torch.utils.data import DataLoader

from cyclegan_lightning.errors import ConfigError, CycleGANError
from cyclegan_lightning.models import CUT
from cyclegan_lightning.training import run_training

GEN = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 2}
DISC = {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4, "n_layers": 2}
LAYERS = [0, 4, 8, 10, 11]  # padded input, first down-conv, second down-conv's norm, both residual blocks
SIDE = 16


def tiny_cut(norm: str = "instance", **kwargs) -> CUT:
    gen, disc = GEN | {"norm": norm}, DISC | {"norm": norm}
    return CUT(generator=gen, discriminator=disc, nce_layers=LAYERS, num_patches=8, projection_dim=16, **kwargs)


def batch(batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.rand(batch_size, 3, SIDE, SIDE, generator=g) * 2 - 1 for _ in range(2))
    return {"a": a, "b": b}


def official_nce(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    opt = SimpleNamespace(nce_includes_all_negatives_from_minibatch=False, batch_size=q.shape[0], nce_T=0.07)
    return ref.PatchNCELoss(opt)(q.flatten(0, 1), k.flatten(0, 1)).mean()


def hand_step(model: CUT, data: dict, rng: torch.Generator) -> tuple[dict[str, nn.Module], dict, dict]:
    """The official optimize_parameters written out with plain torch ops on copies of the networks: (updated
    networks, their gradients, the losses)."""
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
    loss_d = 0.5 * (
        F.mse_loss(pred_fake, torch.zeros_like(pred_fake)) + F.mse_loss(pred_real, torch.ones_like(pred_real))
    )
    loss_d.backward()
    opt_d.step()

    def nce(src, tgt):
        feat_q = [x.flip(3) if flipped else x for x in g.encode(tgt, LAYERS)]
        feat_k = g.encode(src, LAYERS)
        total = 0.0
        for i, (fq, fk) in enumerate(zip(feat_q, feat_k)):
            ids = torch.randperm(fk.shape[2] * fk.shape[3], generator=rng)[:8]
            mlp = getattr(f, f"mlp_{i}")
            q, k = (mlp(x.permute(0, 2, 3, 1).flatten(1, 2)[:, ids]) for x in (fq, fk))
            q, k = q / (q.norm(dim=-1, keepdim=True) + 1e-7), k / (k.norm(dim=-1, keepdim=True) + 1e-7)
            total = total + official_nce(q, k) * hp.lambda_nce
        return total / len(LAYERS)

    for p in d.parameters():
        p.requires_grad_(False)
    pred = d(fake_b)
    losses = {"d/b": loss_d, "g/gan": F.mse_loss(pred, torch.ones_like(pred)), "g/nce_a": nce(real_a, fake_b)}
    if hp.nce_idt:
        losses["g/nce_b"] = nce(real_b, idt_b)
    nce_term = 0.5 * (losses["g/nce_a"] + losses["g/nce_b"]) if hp.nce_idt else losses["g/nce_a"]
    losses["g/total"] = losses["g/gan"] + nce_term
    losses["g/total"].backward()
    opt_g.step()
    opt_f.step()
    nets = {"gen_a2b": g, "disc_b": d, "proj": f}
    grads = {f"{name}.{k}": p.grad for name, net in nets.items() for k, p in net.named_parameters()}
    return nets, grads, {k: v.item() for k, v in losses.items()}


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
    # no norm: a conv bias before a norm has no gradient, so its Adam step would be noise; xavier gain 1: with the
    # official 0.02 a network this small projects patches of norm ~1e-9 and PatchNCE sits at chance
    model = tiny_cut(norm="none", init_gain=1.0, **preset)
    seed = 0
    while preset.get("flip_equivariance") and not torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5:
        seed += 1  # FastCUT: a seed whose first draw flips, so the flip-back path is exercised
    model.patch_rng.manual_seed(seed)
    data = batch()
    expected, grads, losses = hand_step(model, data, torch.Generator().manual_seed(seed))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = bare_trainer(max_epochs=1)
    loader = DataLoader([{"a": data["a"][i], "b": data["b"][i]} for i in range(2)], batch_size=2)
    trainer.fit(model, train_dataloaders=loader)
    for key, value in losses.items():
        assert trainer.callback_metrics[f"train/{key}"].item() == pytest.approx(value, rel=1e-5), key
    for name, net in expected.items():
        for key, value in net.state_dict().items():
            got, grad = getattr(model, name).state_dict()[key], grads[f"{name}.{key}"]
            assert not torch.equal(got, before[f"{name}.{key}"]), f"{name}.{key} was not updated"
            # Adam's first step is about lr * sign(g): a coin flip where g is 0 up to rounding (e.g. a bias whose
            # gradient cancels), so those elements are left out
            clear = grad.abs() > 1e-4 * grad.abs().max()
            torch.testing.assert_close(got[clear], value[clear], rtol=1e-5, atol=1e-7, msg=f"{name}.{key}")
            assert clear.float().mean() > 0.5, f"{name}.{key}"


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
    unet = {"_target_": "cyclegan_lightning.networks.UnetGenerator", "num_downs": 5, "ngf": 4}
    with pytest.raises(ConfigError, match="ResNet generator"):
        CUT(generator=unet, discriminator=DISC)
    with pytest.raises(ConfigError, match="model.nce_layers"):
        CUT(generator=GEN, discriminator=DISC, nce_layers=[0, 4, 99])


# ---- the real config, end to end: train.py model=cut / fastcut, resume, predict, evaluate, export, sample grid ----
SMALL_NCE = ["model.nce_layers=[0,4,8,10]", "model.num_patches=16", "model.projection_dim=16"]  # TINY's 1-block G
CUT_RUN = ["logger=csv", "trainer.max_epochs=1", *SMALL_NCE]


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, run dir) of one tiny CUT epoch from the real config."""
    base = tmp_path_factory.mktemp("cut_run")
    root = make_dataset(base / "data", n_train=4, n_test=3)
    run_training(compose_train_cfg([f"data.root={root}", "model=cut", *CUT_RUN], base / "run"))
    return root, base / "run"


def test_fid_callback_scores_the_directions_a_cut_model_has(tmp_path):
    """``callbacks=fid model=cut``: two FID epochs (random features: no download) on tiny data, logging the A->B
    FID and KID only; asking for the B->A generator CUT does not have would crash the first FID epoch."""
    root = make_dataset(tmp_path / "data", n_train=4, n_test=3)
    fid = ["callbacks=fid", "callbacks.fid.features=random", "callbacks.fid.every_n_epochs=1"]
    cfg = compose_train_cfg(
        [f"data.root={root}", "model=cut", *CUT_RUN, "trainer.max_epochs=2", *fid, "callbacks.fid.max_images=3"],
        tmp_path / "run",
    )
    metrics = run_training(cfg)
    assert "val/fid_a2b" in metrics and "val/kid_a2b" in metrics
    header, *rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    assert not [c for c in columns if "b2a" in c], columns
    col = columns.index("val/fid_a2b")
    assert len([r for r in rows if r.split(",")[col]]) == 2  # both epochs


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    from cyclegan_lightning.data.demo import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_train=4, n_test=2)


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_train_py_trains_the_demo_with_cut_and_fastcut(model, demo_root, tmp_path):
    """``python train.py model=cut`` (the demo experiment) composes with a ResNet generator and trains, shrunk."""
    cfg = compose_train_cfg(
        [
            f"model={model}",
            f"data.root={demo_root}",
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "model.generator.n_blocks=2",
            "model.generator.ngf=8",
            "model.discriminator.ndf=8",
            "model.nce_layers=[0,4,8,10,11]",
            "model.num_patches=16",
            "model.projection_dim=16",
            "model.identity_init_steps=2",
            "callbacks.sample_grid.n_images=2",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path / "run",
        tiny=False,
    )
    assert cfg.model._target_ == "cyclegan_lightning.models.CUT" and "Resnet" in cfg.model.generator._target_
    assert (cfg.model.lambda_nce, cfg.model.nce_idt, cfg.model.flip_equivariance) == (
        (1.0, True, False) if model == "cut" else (10.0, False, True)
    )
    metrics = run_training(cfg)
    assert "train/g/nce_a" in metrics and "val/swd" in metrics and "val/swd_b2a" not in metrics
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and {k.split(".")[0] for k in state["state_dict"]} >= {"gen_a2b", "disc_b", "proj"}


def test_cut_resume_is_bitwise_exact(tmp_path):
    """2 epochs straight == 1 epoch, then resume for the 2nd: weights, F, Adam moments, LR and the patch RNG."""
    data = make_dataset(tmp_path / "data")
    common = [f"data.root={data}", "model=cut", "logger=csv", "model.lambda_nce=10", *SMALL_NCE]

    def run(name: str, *overrides: str) -> dict:
        run_training(compose_train_cfg([*common, *overrides], tmp_path / name))
        return _load(tmp_path / name / "checkpoints" / "last.ckpt")

    straight = run("straight", "trainer.max_epochs=2")
    run("first", "trainer.max_epochs=1")
    resumed = run("second", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}")
    _assert_same_training_state(straight, resumed, pools=False)
    assert len(resumed["optimizer_states"]) == 3
    assert torch.equal(straight["random_generators"]["patch"], resumed["random_generators"]["patch"])


def test_predict_evaluate_export_on_a_cut_checkpoint(cut_run, tmp_path):
    root, run = cut_run
    ckpt = run / "checkpoints" / "last.ckpt"
    summary = predict(predict_cfg(ckpt, root / "testA", tmp_path / "pred"))
    assert summary.translated == 3
    with pytest.raises(ConfigError, match="no b2a generator") as err:
        predict(predict_cfg(ckpt, root / "testB", tmp_path / "pred_b", "direction=b2a"))
    assert "\n" not in str(err.value)
    cfg = evaluate_cfg(f"ckpt_path={ckpt}", f"data_root={root}", "fid.features=random", f"output_dir={tmp_path}")
    (result,) = evaluate_run()(cfg)["checkpoints"]
    assert set(result["metrics"]) == {"a2b"} and math.isfinite(result["metrics"]["a2b"]["fid"])
    export = load_script("export")
    path, err_max = export.run(export_cfg(ckpt, tmp_path / "gen.pt"))
    assert path.is_file() and err_max < 1e-4
    with pytest.raises(CycleGANError, match="no b2a generator"):
        export.run(export_cfg(ckpt, tmp_path / "gen_b.pt", "direction=b2a"))


def export_cfg(ckpt: Path, output: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"output={output}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def test_sample_grid_of_a_one_way_model_has_rows_real_a_and_a_to_b(cut_run):
    _, run = cut_run
    grid = Image.open(run / "samples" / "epoch_0001.png")
    tile = 128 + 2  # tiles enlarged to display_size 128, with 2 px padding
    assert 2 * tile <= grid.height < 3 * tile  # (a title line on top) two rows, not the six of CycleGAN


# ---- CycleGAN with model.lambda_nce ------------------------------------------------------------------------------
def test_cyclegan_lambda_nce_adds_each_directions_patchnce_and_trains_its_heads():
    from cyclegan_lightning.models import CycleGAN
    from cyclegan_lightning.models.losses import PatchNCELoss
    from cyclegan_lightning.models.patchnce import patchnce_between

    torch.manual_seed(0)
    off = CycleGAN(generator=GEN, discriminator=DISC)
    torch.manual_seed(0)
    on = CycleGAN(generator=GEN, discriminator=DISC, lambda_nce=2.0, nce_layers=LAYERS, num_patches=8)
    assert not any(k.startswith("proj") for k in off.state_dict())  # off by default: no head, nothing drawn
    for key, value in off.state_dict().items():  # the same networks: the heads are built after them
        assert torch.equal(value, on.state_dict()[key]), key
    data = batch()
    real_a, real_b = data["a"], data["b"]
    with torch.no_grad():
        fake_b, fake_a = on.gen_a2b(real_a), on.gen_b2a(real_b)
        rec_a, rec_b = on.gen_b2a(fake_b), on.gen_a2b(fake_a)
        rng = torch.Generator()
        rng.set_state(on.patch_rng.get_state())
        without = off.generator_losses(real_a, real_b, fake_a, fake_b, rec_a, rec_b)
        got = on.generator_losses(real_a, real_b, fake_a, fake_b, rec_a, rec_b)
        expected = [
            patchnce_between(gen, head, PatchNCELoss(), real, fake, LAYERS, rng, 2.0)
            for gen, head, real, fake in (
                (on.gen_a2b, on.proj_a2b, real_a, fake_b),
                (on.gen_b2a, on.proj_b2a, real_b, fake_a),
            )
        ]
    assert torch.equal(got["nce_a"], expected[0]) and torch.equal(got["nce_b"], expected[1])
    torch.testing.assert_close(got["total"], without["total"] + expected[0] + expected[1])
    opt_g, _ = on.configure_optimizers()[0]
    owned = {id(p) for group in opt_g.param_groups for p in group["params"]}
    heads = {id(p) for head in (on.proj_a2b, on.proj_b2a) for p in head.parameters()}
    assert heads <= owned
    before = {k: v.clone() for k, v in on.state_dict().items() if k.startswith("proj")}
    loader = DataLoader([{"a": real_a[i], "b": real_b[i]} for i in range(2)], batch_size=2)
    bare_trainer(max_epochs=1).fit(on, train_dataloaders=loader)
    assert all(not torch.equal(on.state_dict()[k], v) for k, v in before.items())


def test_gpu_experiments_carry_the_papers_settings(tmp_path):
    cut = compose_train_cfg(["experiment=horse2zebra_cut"], tmp_path, tiny=False)
    m, d = cut.model, cut.data
    assert m._target_ == "cyclegan_lightning.models.CUT" and m.generator.n_blocks == 9 and m.generator.ngf == 64
    assert (m.lambda_gan, m.lambda_nce, m.nce_idt, m.flip_equivariance) == (1.0, 1.0, True, False)
    assert (list(m.nce_layers), m.num_patches, m.nce_temperature, m.projection_dim) == (
        [0, 4, 8, 12, 16],
        256,
        0.07,
        256,
    )
    assert (m.init_type, m.init_gain, m.lr, list(m.betas), m.gan_mode) == ("xavier", 0.02, 2e-4, [0.5, 0.999], "lsgan")
    assert (d.load_size, d.crop_size, d.batch_size, cut.trainer.max_epochs) == (286, 256, 1, 400)
    fast = compose_train_cfg(["experiment=horse2zebra_cut", "model=fastcut"], tmp_path, tiny=False)
    assert (fast.model.lambda_nce, fast.model.nce_idt, fast.model.flip_equivariance) == (10.0, False, True)
    assert fast.trainer.max_epochs == 200
    selfie = compose_train_cfg(["experiment=selfie2anime_cut"], tmp_path, tiny=False)
    assert selfie.model._target_.endswith("CUT") and selfie.trainer.max_epochs == 40


def test_cut_gets_the_stabilisers_diffaugment_r1_and_ema():
    """The shared hooks reach CUT: D sees augmented images in both steps, R1 joins its loss, the EMA follows G."""
    torch.manual_seed(0)
    model = tiny_cut(diffaugment="cutout", lambda_r1=1.0, ema_decay=0.5)
    seen = []
    model.disc_b.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    data = batch()
    trainer = bare_trainer(max_epochs=1)
    loader = DataLoader([{"a": data["a"][i], "b": data["b"][i]} for i in range(2)], batch_size=1)  # 2 steps
    trainer.fit(model, train_dataloaders=loader)
    real_b = data["b"]
    assert len(seen) >= 4 and all((x == 0).any() for x in seen)  # every input through cutout (the images have no 0)
    assert not (real_b == 0).any()
    assert trainer.callback_metrics["train/d/r1_b"] > 0
    ema = model.gen_ema.generator("a2b")  # the first update copies, the second averages
    assert not all(torch.equal(p, q) for p, q in zip(ema.parameters(), model.gen_a2b.parameters(), strict=True))
    plain = tiny_cut()
    assert plain.augment is None and plain.gen_ema is None and plain.lambda_r1 == 0.0  # off by default
