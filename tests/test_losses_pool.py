"""GAN losses (including a real WGAN-GP penalty) and the image pool's algorithm and state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_lightning.models.image_pool import ImagePool
from cyclegan_lightning.models.losses import GANLoss, gradient_penalty


def test_gan_losses_match_their_definitions():
    pred = torch.randn(2, 1, 5, 5)
    assert torch.allclose(GANLoss("lsgan")(pred, True), ((pred - 1) ** 2).mean())
    assert torch.allclose(GANLoss("lsgan")(pred, False), (pred**2).mean())
    assert torch.allclose(
        GANLoss("vanilla")(pred, True), F.binary_cross_entropy(torch.sigmoid(pred), torch.ones_like(pred)), atol=1e-6
    )
    assert torch.allclose(GANLoss("wgangp")(pred, True), -pred.mean())
    assert torch.allclose(GANLoss("wgangp")(pred, False), pred.mean())


def test_gradient_penalty_is_exact_for_a_linear_critic_and_trains_it():
    critic = nn.Conv2d(3, 1, kernel_size=4, bias=False)  # 4x4 input -> one score = <w, x>
    real, fake = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    expected = (critic.weight.norm() - 1) ** 2  # |grad_x <w, x>| = |w| for every interpolate
    assert torch.allclose(gp, expected, atol=1e-5)
    gp.backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_pool_size_zero_returns_input():
    x = torch.randn(3, 3, 4, 4)
    assert ImagePool(0).query(x) is x


def test_pool_fills_then_swaps_half_the_time():
    pool = ImagePool(2, seed=0)
    first = torch.full((2, 1, 1, 1), 1.0)
    assert torch.equal(pool.query(first), first) and len(pool) == 2  # filling: returns its input
    returned_old = 0
    for i in range(2, 1002):
        out = pool.query(torch.full((1, 1, 1, 1), float(i)))
        returned_old += int(out.item() != float(i))
        assert len(pool) == 2
    assert 430 < returned_old < 570  # p = 0.5 over 1000 draws
    assert 1.0 not in {img.item() for img in pool.images}  # the first images were swapped out long ago


def test_pool_state_round_trip_reproduces_future_draws():
    pool = ImagePool(4, seed=1)
    for _ in range(6):
        pool.query(torch.randn(2, 3, 2, 2))
    restored = ImagePool(4, seed=999)
    restored.load_state_dict(pool.state_dict())
    batch = torch.randn(3, 3, 2, 2)
    assert torch.equal(pool.query(batch), restored.query(batch))
    assert all(torch.equal(a, b) for a, b in zip(pool.images, restored.images))


def test_pool_state_is_loadable_with_weights_only(tmp_path):
    pool = ImagePool(2, seed=0)
    pool.query(torch.randn(2, 3, 2, 2))
    torch.save(pool.state_dict(), tmp_path / "pool.pt")
    state = torch.load(tmp_path / "pool.pt", weights_only=True)  # raises if the state holds anything but plain data
    restored = ImagePool(2)
    restored.load_state_dict(state)
    batch = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(restored.query(batch.clone()), pool.query(batch.clone()), atol=0, rtol=0)


def test_wgangp_trains_under_bf16_mixed_precision(train_cfg):
    """WGAN-GP's double backward under bf16 autocast (trainer=bf16 on a CPU): it runs, and every logged
    loss, the gradient penalties included, is finite."""
    import csv
    from pathlib import Path

    from cyclegan_lightning.training.run import run_training

    cfg = train_cfg(
        "model.gan_mode=wgangp", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "trainer.log_every_n_steps=1"
    )
    run_training(cfg)
    rows = list(csv.DictReader((Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open()))
    gp = [float(r["train/d/gp_a"]) for r in rows if r.get("train/d/gp_a")]
    assert gp and all(torch.isfinite(torch.tensor(gp)))
