"""The validation quality metric (multi-scale SWD, ``val/swd``) ranks translations correctly on real photos:
the true translation beats the identity, a constant output, a collapsed output and a generator at
initialisation; it is deterministic; the module wires both directions to the right images; a run that learns
improves it."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from photos import grade, photo_crops, ungrade
from probes import bare_trainer, stand_in
from torch.utils.data import DataLoader

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.metrics.swd import SlicedWassersteinDistance, laplacian_pyramid, swd
from cyclegan_lightning.networks import ResnetGenerator, init_weights

N = 8  # test images per domain, as in the demo


@pytest.fixture(scope="module")
def domains() -> dict[str, torch.Tensor]:
    """Held-out A photos and real B images (the grade of *other* crops)."""
    return {"a": photo_crops(N, 64, seed=1), "b": grade(photo_crops(N, 64, seed=2))}


def test_true_translation_beats_identity_constant_collapse_and_init(domains):
    a, real_b = domains["a"], domains["b"]
    torch.manual_seed(0)
    init = init_weights(ResnetGenerator(input_nc=3, output_nc=3, ngf=16, n_blocks=2), "normal", 0.02)
    with torch.no_grad():
        at_init = init(a)
    scores = {
        "truth": swd(real_b, grade(a)),
        "identity": swd(real_b, a),
        "constant gray": swd(real_b, torch.zeros_like(a)),
        "constant B colour": swd(real_b, real_b.mean((0, 2, 3), keepdim=True).expand_as(a)),
        "collapsed": swd(real_b, grade(a[:1]).expand_as(a)),  # one good-looking output for every input
        "initialisation": swd(real_b, at_init),
    }
    others = {k: float(v) for k, v in scores.items() if k != "truth"}
    assert float(scores["truth"]) < 0.6 * min(others.values()), (float(scores["truth"]), others)


def test_a_global_colour_and_contrast_change_counts(domains):
    """A per-channel gain and offset (no clipping) is exactly what normalising each set by its own statistics,
    as the original does, would hide: it would score 0."""
    b = domains["b"]
    graded = 0.7 * b + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)
    assert float(swd(b, b)) == pytest.approx(0, abs=1e-6)
    assert float(swd(b, graded)) > 0.15  # measured 0.23; the sampling floor between two real sets is about 0.08


def test_value_depends_only_on_the_images_not_their_order_or_batching(domains):
    a, b = domains["a"], domains["b"]
    whole = SlicedWassersteinDistance()
    whole.update(b, real=True)
    whole.update(a, real=False)
    pieces = SlicedWassersteinDistance()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    for i in range(0, N, 3):  # other order, other batch sizes, fakes before reals
        pieces.update(a[perm[i : i + 3]], real=False)
    for i in range(N):
        pieces.update(b[perm[i : i + 1]], real=True)
    assert float(whole.compute()) == pytest.approx(float(pieces.compute()), rel=1e-5)
    assert float(swd(b, a)) == float(swd(b, a))  # fixed projections: rerun, same number


def test_unequal_set_sizes_and_pyramid_levels(domains):
    a, b = domains["a"], domains["b"]
    assert [tuple(level.shape[-2:]) for level in laplacian_pyramid(a)] == [(64, 64), (32, 32), (16, 16)]
    assert float(swd(b, grade(a[:3]))) < float(swd(b, a[:3]))  # 8 real vs 3 translated images still rank


def validate(model: CycleGAN, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    loaders = [DataLoader([{"image": x} for x in images], batch_size=3) for images in (a, b)]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(model, dataloaders=loaders, verbose=False)[0]


def model_with(a2b: str, b2a: str) -> CycleGAN:
    model = CycleGAN(
        generator={"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 1},
        discriminator={"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 4, "n_layers": 2},
    )
    model.gen_a2b, model.gen_b2a = stand_in(a2b, "a2b"), stand_in(b2a, "b2a")
    return model


def test_module_scores_each_direction_against_the_real_images_of_its_target_domain(domains):
    """Truth in one direction and identity in the other: only the identity direction scores badly. Swapping the
    target sets (A->B judged against real A) would reverse both comparisons."""
    a = domains["a"]
    b = grade(photo_crops(N, 64, seed=4))
    good_a2b = validate(model_with("truth", "identity"), a, b)
    good_b2a = validate(model_with("identity", "truth"), a, b)
    assert good_a2b["val/swd_a2b"] < 0.6 * good_b2a["val/swd_a2b"]
    assert good_b2a["val/swd_b2a"] < 0.6 * good_a2b["val/swd_b2a"]
    for result in (good_a2b, good_b2a):
        assert result["val/swd"] == pytest.approx((result["val/swd_a2b"] + result["val/swd_b2a"]) / 2)
        assert "val/cycle" in result  # still logged
    assert float(ungrade(grade(a)).sub(a).abs().max()) < 1e-4  # the B->A truth really inverts the grade


def test_a_run_that_learns_improves_the_metric(tmp_path):
    """A few seconds of real training on photo crops lowers val/swd from its value at initialisation."""
    torch.manual_seed(0)
    a_train, b_train = photo_crops(16, 32, seed=5), grade(photo_crops(16, 32, seed=6))
    a_test, b_test = photo_crops(N, 32, seed=1), grade(photo_crops(N, 32, seed=2))
    model = CycleGAN(
        generator={"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 8, "n_blocks": 1},
        discriminator={"_target_": "cyclegan_lightning.networks.NLayerDiscriminator", "ndf": 8, "n_layers": 2},
        lr=1e-3,
        n_epochs=3,
        n_epochs_decay=0,
    )
    before = validate(model, a_test, b_test)["val/swd"]
    train = DataLoader([{"a": x, "b": y} for x, y in zip(a_train, b_train)], batch_size=2, shuffle=True)
    trainer = bare_trainer(max_epochs=3, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=train)
    after = validate(model, a_test, b_test)["val/swd"]
    assert after < 0.7 * before, (before, after)
