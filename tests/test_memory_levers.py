"""Memory levers for high resolution: activation checkpointing (same gradients, fewer stored activations) and
gradient accumulation under manual optimization (k batches of n == one batch of k * n; steps once per k batches;
under DDP no all-reduce on the batches that do not step; under fp16 AMP one consistent loss scale per window)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY, make_dataset
from lightning.pytorch.plugins import MixedPrecision
from probes import bare_trainer, train_py
from torch.utils.data import DataLoader

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.networks import ResnetGenerator, UnetGenerator, set_activation_checkpointing

DISC = {"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4, "n_layers": 2}
RESNET = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 2, "use_dropout": True}
UNET = {
    "_target_": "cyclegan_lightning.networks.UnetGenerator",
    "num_downs": 5,
    "ngf": 4,
    "use_dropout": True,
    "norm": "batch",
}


def batches(n: int, batch_size: int, side: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = [
        {"a": torch.rand(3, side, side, generator=g) * 2 - 1, "b": torch.rand(3, side, side, generator=g) * 2 - 1}
        for _ in range(n)
    ]
    return DataLoader(data, batch_size=batch_size)


def train(model: CycleGAN, n: int, batch_size: int, callbacks=(), plugins=None) -> L.Trainer:
    """Fit one epoch of ``n`` images from a fixed seed (dropout masks and the pools' draws repeat run to run)."""
    L.seed_everything(0, verbose=False)
    trainer = bare_trainer(max_epochs=1, callbacks=list(callbacks), plugins=plugins)
    trainer.fit(model, train_dataloaders=batches(n, batch_size))
    return trainer


def model_from(seed: int = 0, **kwargs) -> CycleGAN:
    torch.manual_seed(seed)
    return CycleGAN(**{"generator": RESNET, "discriminator": DISC, **kwargs})


def adam_states(trainer: L.Trainer) -> list[dict]:
    return [opt.optimizer.state_dict()["state"] for opt in trainer.strategy._lightning_optimizers]


# ---- activation checkpointing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("generator", [RESNET, UNET], ids=["resnet-dropout", "unet-dropout-batchnorm"])
def test_checkpointing_gives_bitwise_equal_weights_buffers_and_adam_states(generator):
    """Two steps with and without: recomputation replays dropout masks and batch-norm statistics are updated once."""
    runs = []
    for on in (False, True):
        model = model_from(generator=generator, activation_checkpointing=on, pool_size=2)
        trainer = train(model, n=2, batch_size=2 if generator is UNET else 1)
        runs.append((model.state_dict(), adam_states(trainer)))
    (plain, plain_adam), (ckpt, ckpt_adam) = runs
    assert list(plain) == list(ckpt)  # same keys: reference checkpoints still load
    assert all(torch.equal(plain[k], ckpt[k]) for k in plain), [k for k in plain if not torch.equal(plain[k], ckpt[k])]
    for a, b in zip(plain_adam, ckpt_adam):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[i][s], b[i][s]) for i in a for s in a[i])


def saved_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``net(x)`` (recomputed ones excluded)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return total


@pytest.mark.parametrize(
    "net", [ResnetGenerator(ngf=8, n_blocks=9), UnetGenerator(num_downs=6, ngf=8)], ids=["resnet9", "unet"]
)
def test_checkpointing_stores_fewer_activations_and_keeps_keys(net):
    x = torch.randn(1, 3, 64, 64)
    keys = list(net.state_dict())
    plain = saved_bytes(net, x)
    assert set_activation_checkpointing(net) > 0
    assert list(net.state_dict()) == keys
    # ResNet: the blocks and the stages around them all recompute (8% of the plain figure; blocks alone: 42%)
    limit = 0.15 if isinstance(net, ResnetGenerator) else 0.8
    assert saved_bytes(net, x) < limit * plain
    with torch.no_grad():  # inference: no checkpoint machinery, same output
        out = net(x)
    set_activation_checkpointing(net, False)
    with torch.no_grad():
        assert torch.equal(out, net(x))


# ---- gradient accumulation -----------------------------------------------------------------------------------------
def test_accumulation_must_be_a_positive_integer():
    with pytest.raises(ConfigError, match="accumulate_grad_batches"):
        model_from(accumulate_grad_batches=0)


class GradsAtStep(L.Callback):
    """The gradients each optimizer steps on, by parameter name, in step order."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.steps.append({n: p.grad.clone() for n, p in pl_module.named_parameters() if id(p) in ids})


@pytest.mark.parametrize("lambda_identity", [0.0, 0.5])
def test_k_batches_of_one_equal_one_batch_of_k(lambda_identity):
    """Losses are means over samples (instance norm is per sample), so k mean losses / k give the gradients of one
    batch of k. Without a pool (pool_size=0) the discriminators see exactly that batch's fakes in both runs.
    Gradients are compared, not weights: Adam's first step is lr * sign(g), and biases before an instance norm have
    a true gradient of zero, so their float noise would decide a sign."""
    k, common = 4, {"pool_size": 0, "lambda_identity": lambda_identity, "generator": {**RESNET, "use_dropout": False}}
    runs = []
    for model, batch_size in ((model_from(**common), k), (model_from(**common, accumulate_grad_batches=k), 1)):
        grads = GradsAtStep()
        trainer = train(model, n=k, batch_size=batch_size, callbacks=[grads])
        assert trainer.global_step == 2  # one generator and one discriminator step
        runs.append(grads.steps)
    (big_g, big_d), (acc_g, acc_d) = runs
    for big, acc in ((big_g, acc_g), (big_d, acc_d)):
        assert big.keys() == acc.keys()
        scale = max(float(g.abs().max()) for g in big.values())
        for name, grad in big.items():
            torch.testing.assert_close(acc[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


class WeightTrace(L.Callback):
    """After each batch: did the generators' / discriminators' first weight change during that batch?"""

    def __init__(self):
        self.changed: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = [next(n.parameters()).detach().clone() for n in (pl_module.gen_a2b, pl_module.disc_a)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = [next(n.parameters()) for n in (pl_module.gen_a2b, pl_module.disc_a)]
        self.changed.append(tuple(not torch.equal(b, a) for b, a in zip(self.before, after)))


def test_optimizers_step_once_per_k_batches_and_at_the_epochs_last_batch():
    trace = WeightTrace()
    trainer = train(model_from(accumulate_grad_batches=3), n=7, batch_size=1, callbacks=[trace])
    stepped = [i for i, (g, d) in enumerate(trace.changed) if g and d]
    untouched = [i for i, (g, d) in enumerate(trace.changed) if not g and not d]
    assert stepped == [2, 5, 6] and untouched == [0, 1, 3, 4]  # the 7th batch closes a short window
    assert trainer.global_step == 2 * 3


def test_fp16_accumulation_keeps_one_loss_scale_per_window():
    """The generator step updates the GradScaler both optimizers share; the discriminator gradients accumulated at
    the old scale are rescaled, so with a scale that grows at every step (growth_interval=1) the discriminators
    step on the same gradients as with a fixed scale (up to fp16 rounding; without the rescale, off by ~30%)."""
    results = []
    for growth_interval in (1, 10_000):
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=growth_interval)
        grads = GradsAtStep()
        model = model_from(accumulate_grad_batches=2, pool_size=0, generator={**RESNET, "use_dropout": False})
        train(model, n=2, batch_size=1, callbacks=[grads], plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
        results.append((grads.steps, scaler.get_scale()))
    (grown, grown_scale), (fixed, fixed_scale) = results
    assert (grown_scale, fixed_scale) == (4096.0, 1024.0)  # grew at the generator step, inside the window
    for step_grown, step_fixed in zip(grown, fixed):  # [generators, discriminators]
        diff = torch.cat([(step_grown[n] - g).flatten() for n, g in step_fixed.items()])
        ref = torch.cat([g.flatten() for g in step_fixed.values()])
        assert float(diff.norm() / ref.norm()) < 1e-3


def test_ddp_accumulation_syncs_only_on_stepping_batches(tmp_path: Path):
    """2 ranks x 2 batches of one image, k=2: no all-reduce in the first batch, one per backward (G, D) in the
    second, and both ranks end with the same weights (``train.py trainer=ddp_cpu`` in a subprocess, pitfall 6)."""
    data = make_dataset(tmp_path / "data", n_train=4)
    train_py(
        [
            "trainer=ddp_cpu",
            *TINY,
            f"data.root={data}",
            "trainer.max_epochs=1",
            "data.batch_size=1",
            "model.accumulate_grad_batches=2",
            f"hydra.run.dir={tmp_path / 'run'}",
            "+callbacks.probe._target_=probes.SyncProbe",
            f"+callbacks.probe.out_dir={tmp_path / 'probe'}",
        ],
        root=tmp_path,
    )
    ranks = [json.loads((tmp_path / "probe" / f"sync{r}.json").read_text()) for r in (0, 1)]
    assert [r["per_batch"] for r in ranks] == [[0, 2], [0, 2]]
    assert [r["global_step"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]


@pytest.mark.parametrize("family", ["cyclegan", "cut"])
def test_ada_counts_a_whole_window_at_each_discriminator_step(family, monkeypatch):
    """The stabilisers' hook follows each optimizer step of a phase: under k=2, ADA takes one step per window (not
    per batch) and counts the window's images, in both model families (they used to differ)."""
    from cyclegan_lightning.models import CUT
    from cyclegan_lightning.models.augment import DiscriminatorAugment

    counted: list[int] = []
    step = DiscriminatorAugment.step
    monkeypatch.setattr(DiscriminatorAugment, "step", lambda self, n, reduce=None: counted.append(n) or step(self, n))
    ada = {"diffaugment": "color", "ada_target": 0.6, "ada_interval": 1}
    for k, expected in ((1, [1, 1, 1, 1, 1]), (2, [2, 2, 1])):  # 5 batches of 1: the last window is short
        counted.clear()
        if family == "cut":
            torch.manual_seed(0)
            model = CUT(generator=RESNET, discriminator=DISC, nce_layers=[0, 4], num_patches=4, projection_dim=8,
                        accumulate_grad_batches=k, **ada)  # fmt: skip
        else:
            model = model_from(accumulate_grad_batches=k, **ada)
        train(model, n=5, batch_size=1)
        assert counted == expected
