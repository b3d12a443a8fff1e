"""CUT's building blocks against the official code (tests/reference_cut.py): PatchNCE loss, patch sampler + head F,
and the generator's encoder taps."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import reference_cut as ref
import torch

from cyclegan_lightning.models.losses import PatchNCELoss
from cyclegan_lightning.networks import PatchSampleF, ResnetGenerator

CUT_LAYERS = [0, 4, 8, 12, 16]  # the official nce_layers


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def official_loss(q: torch.Tensor, k: torch.Tensor, all_negatives: bool, temperature: float = 0.07) -> torch.Tensor:
    opt = SimpleNamespace(
        nce_includes_all_negatives_from_minibatch=all_negatives, batch_size=q.shape[0], nce_T=temperature
    )
    return ref.PatchNCELoss(opt)(q.flatten(0, 1), k.flatten(0, 1))


# ---------------------------------------------------------------------------------------------------- PatchNCE loss


@pytest.mark.parametrize("all_negatives", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_loss_equals_official_patchnce_on_random_features(batch, all_negatives):
    gen = torch.Generator().manual_seed(batch)
    q, k = unit(torch.randn(batch, 256, 64, generator=gen)), unit(torch.randn(batch, 256, 64, generator=gen))
    k = unit(k + 2 * q)  # positives clearly above the negatives, so the loss is far from its chance value
    expected = official_loss(q, k, all_negatives)
    per_patch = PatchNCELoss(negatives_from_minibatch=all_negatives, reduction="none")(q, k)
    assert per_patch.shape == (batch, 256)
    torch.testing.assert_close(per_patch.flatten(), expected, rtol=0, atol=0)
    torch.testing.assert_close(
        PatchNCELoss(negatives_from_minibatch=all_negatives)(q, k), expected.mean(), rtol=0, atol=0
    )


def test_loss_hand_computed_two_patches_in_2d():
    # query patches q1, q2 and key patches k1, k2 in 2-D; T = 0.07
    a, b = 0.3, 1.2
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[math.cos(a), math.sin(a)], [math.cos(b), math.sin(b)]]])
    t = 0.07
    # row i: [q_i.k_i, q_i.k_1, q_i.k_2] / T with the diagonal q_i.k_i replaced by -10; loss_i = -log softmax(row)[0]
    s11, s12 = math.cos(a), math.cos(b)  # q1.k1, q1.k2
    s21, s22 = math.sin(a), math.sin(b)  # q2.k1, q2.k2
    loss1 = -s11 / t + math.log(math.exp(s11 / t) + math.exp(-10 / t) + math.exp(s12 / t))
    loss2 = -s22 / t + math.log(math.exp(s22 / t) + math.exp(s21 / t) + math.exp(-10 / t))
    got = PatchNCELoss(reduction="none")(q, k)
    torch.testing.assert_close(got, torch.tensor([[loss1, loss2]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(PatchNCELoss()(q, k), torch.tensor((loss1 + loss2) / 2), rtol=1e-5, atol=1e-5)


def test_loss_hand_computed_negatives_per_image_or_from_minibatch():
    # two images with one patch each: per image, the only "negative" is the -10 diagonal; across the minibatch,
    # the other image's key is a real negative
    t = 0.07
    q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    k = torch.tensor([[[0.6, 0.8]], [[0.8, 0.6]]])
    pos = [0.6, 0.6]  # q1.k1, q2.k2
    cross = [0.8, 0.8]  # q1.k2, q2.k1
    per_image = [math.log(1 + math.exp((-10 - p) / t)) for p in pos]
    minibatch = [-p / t + math.log(math.exp(p / t) + math.exp(-10 / t) + math.exp(c / t)) for p, c in zip(pos, cross)]
    got_image = PatchNCELoss(reduction="none")(q, k).flatten()
    got_batch = PatchNCELoss(negatives_from_minibatch=True, reduction="none")(q, k).flatten()
    torch.testing.assert_close(got_image, torch.tensor(per_image), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_batch, torch.tensor(minibatch), rtol=1e-5, atol=1e-5)


def test_projection_against_itself_is_near_minimum_and_against_shuffled_patches_is_not():
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, 24, 24, generator=gen) for c in (3, 32, 64)]
    head = PatchSampleF([3, 32, 64], num_patches=256)
    loss = PatchNCELoss()
    key, ids = head(feats, generator=gen)
    same, _ = head(feats, patch_ids=ids)
    shuffled_ids = [i[torch.randperm(len(i), generator=gen)] for i in ids]
    shuffled, _ = head(feats, patch_ids=shuffled_ids)
    chance = math.log(256)  # every logit equal
    for layer, (k, q_same, q_shuffled) in enumerate(zip(key, same, shuffled)):
        self_loss, shuffled_loss = loss(q_same, k).item(), loss(q_shuffled, k).item()
        # the minimum: positive 1/T, 255 negatives at -1/T
        minimum = math.log(1 + 255 * math.exp(-2 / 0.07))
        assert minimum <= self_loss < 0.5 * chance, (layer, self_loss)
        assert shuffled_loss > self_loss + 3, (layer, self_loss, shuffled_loss)


def test_keys_are_detached_and_loss_is_fp32_under_autocast():
    gen = torch.Generator().manual_seed(1)
    q = unit(torch.randn(2, 16, 8, generator=gen)).requires_grad_(True)
    k = unit(torch.randn(2, 16, 8, generator=gen)).requires_grad_(True)
    PatchNCELoss()(q, k).backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = PatchNCELoss()(q.bfloat16(), k.bfloat16())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, PatchNCELoss()(q.bfloat16().float(), k.bfloat16().float()), rtol=0, atol=0)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B, P, C\)"):
        PatchNCELoss()(torch.zeros(2, 4, 8), torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="temperature"):
        PatchNCELoss(temperature=0)


# ------------------------------------------------------------------------------------------ patch sampler + head F


def official_head(in_channels, num_patches=256, side=4):
    net = ref.PatchSampleF(use_mlp=True, init_type="xavier", init_gain=0.02, nc=256)
    net(([torch.zeros(1, c, side, side) for c in in_channels]), num_patches)  # the official lazy creation
    return net


def test_head_has_official_parameter_count_keys_and_init():
    channels = [3, 128, 256, 256, 256]
    ours, theirs = PatchSampleF(channels), official_head(channels)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 560_384
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert {f"mlp_{i}.{j}.{w}" for i in range(5) for j in (0, 2) for w in ("weight", "bias")} == set(ours.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)  # an official *_net_F.pth loads
    fresh = PatchSampleF(channels)
    assert all(torch.count_nonzero(b) == 0 for n, b in fresh.named_parameters() if n.endswith("bias"))
    w = fresh.mlp_1[0].weight  # xavier_normal, gain 0.02: std = 0.02 * sqrt(2 / (fan_in + fan_out))
    assert w.std().item() == pytest.approx(0.02 * math.sqrt(2 / (128 + 256)), rel=0.05)


def test_head_equals_official_patchsamplef_with_the_same_ids():
    channels = [3, 16, 32]
    theirs = official_head(channels)
    ours = PatchSampleF(channels, num_patches=20)
    ours.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(2)
    feats = [torch.randn(2, c, s, s, generator=gen) for c, s in zip(channels, (9, 6, 4))]
    mine, ids = ours(feats, generator=gen)
    assert [len(i) for i in ids] == [20, 20, 16]  # min(num_patches, H*W)
    official, _ = theirs(feats, 20, [i.numpy() for i in ids])
    for m, o in zip(mine, official):
        torch.testing.assert_close(m.flatten(0, 1), o, rtol=0, atol=0)


def test_query_patches_line_up_with_key_patches():
    # each position's feature encodes its (row, col); the query map differs in content but not in positions
    b, h, w = 3, 5, 7
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float), torch.arange(w, dtype=torch.float), indexing="ij")
    key_map = torch.stack([rows + 1, cols + 1, torch.ones(h, w)]).expand(b, 3, h, w)
    query_map = torch.flip(key_map, dims=[0]) * torch.arange(1.0, b + 1).view(b, 1, 1, 1)  # scaled per image
    sampler = PatchSampleF([3], num_patches=10, use_mlp=False)
    (k,), (ids,) = sampler([key_map], generator=torch.Generator().manual_seed(3))
    (q,), _ = sampler([query_map], patch_ids=[ids])
    assert k.shape == q.shape == (b, 10, 3) and len(set(ids.tolist())) == 10
    expected = unit(torch.stack([ids // w + 1.0, ids % w + 1.0, torch.ones(10)], dim=-1))
    for image in range(b):  # the same ids for every image, and for the query
        torch.testing.assert_close(k[image], expected)
        torch.testing.assert_close(q[image], expected)


def test_sampling_is_reproducible_resumable_and_leaves_global_rngs_alone():
    feats = [torch.zeros(1, 3, 16, 16), torch.zeros(1, 8, 8, 8)]
    sampler = PatchSampleF([3, 8], num_patches=32)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    gen = torch.Generator().manual_seed(4)
    first = sampler.sample_ids(feats, gen)
    saved = gen.get_state()
    second = sampler.sample_ids(feats, gen)
    assert not torch.equal(first[0], second[0])
    again = sampler.sample_ids(feats, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(second, sampler.sample_ids(feats, resumed)))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    with pytest.raises(ValueError, match="Generator"):
        sampler(feats)
    with pytest.raises(ValueError, match="2 layers"):
        sampler(feats[:1], generator=gen)


# ------------------------------------------------------------------------------------------------- encoder taps


def test_encoder_taps_give_cut_shapes_and_channels_for_the_default_generator():
    with torch.device("meta"):  # shapes only: no compute for the full-size 256x256 ResNet-9
        net = ResnetGenerator(3, 3, ngf=64, n_blocks=9)
        feats = net.encode(torch.empty(1, 3, 256, 256), CUT_LAYERS)
    shapes = [tuple(f.shape[1:]) for f in feats]
    assert shapes == [(3, 262, 262), (128, 128, 128), (256, 64, 64), (256, 64, 64), (256, 64, 64)]
    assert net.feature_channels(CUT_LAYERS) == [3, 128, 256, 256, 256]
    names = [type(net.model[i]).__name__ for i in CUT_LAYERS]
    assert names == ["ReflectionPad2d", "Conv2d", "InstanceNorm2d", "ResnetBlock", "ResnetBlock"]
    assert net.model[12] is net.model[10:19][2] and net.model[16] is net.model[10:19][6]  # blocks 3 and 7


def test_encoder_taps_equal_official_no_antialias_generator_and_skip_the_decoder():
    ours = ResnetGenerator(3, 3, ngf=8, n_blocks=9)
    theirs = ref.ResnetGenerator(
        3,
        3,
        ngf=8,
        norm_layer=ref.functools.partial(torch.nn.InstanceNorm2d),
        n_blocks=9,
        no_antialias=True,
        no_antialias_up=True,
    )
    ours.load_state_dict(theirs.state_dict(), strict=True)
    calls = []
    for i, module in enumerate(ours.model):
        module.register_forward_hook(lambda *_, i=i: calls.append(i))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    mine = ours.encode(x, CUT_LAYERS)
    official = theirs(x, list(CUT_LAYERS), encode_only=True)
    assert calls == list(range(17))  # stops after layer 16
    assert [f.shape[1] for f in mine] == ours.feature_channels(CUT_LAYERS)
    for m, o in zip(mine, official):
        torch.testing.assert_close(m, o, rtol=0, atol=0)


def test_feature_channels_follow_width_and_depth():
    net = ResnetGenerator(1, 3, ngf=4, n_blocks=2)
    assert net.feature_channels([0, 1, 5, 7, 11]) == [1, 4, 8, 16, 16]
    assert [f.shape[1] for f in net.encode(torch.zeros(1, 1, 8, 8), [0, 1, 5, 7, 11])] == [1, 4, 8, 16, 16]


@pytest.mark.parametrize("layers", [[], [4, 0], [0, 0], [-1], [99]])
def test_encoder_rejects_bad_layer_lists(layers):
    with pytest.raises(ValueError, match="ascending indices"):
        ResnetGenerator(3, 3, ngf=4, n_blocks=2).encode(torch.zeros(1, 3, 8, 8), layers)
