"""Unpaired folders: discovery, the reference's sampling and preprocessing, and every bad input's outcome."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, write_images
from PIL import Image
from torch.utils.data import DataLoader

from cyclegan_lightning.data import UnpairedDataModule, build_transform, load_image
from cyclegan_lightning.data.datasets import SeededSampler
from cyclegan_lightning.data.images import ImageLoadError
from cyclegan_lightning.errors import DataError


def datamodule(root: Path, **kwargs) -> UnpairedDataModule:
    kwargs = {"load_size": 36, "crop_size": 32, "num_workers": 0, "pin_memory": False, **kwargs}
    dm = UnpairedDataModule(root=str(root), **kwargs)
    dm.setup("fit")
    return dm


def _epoch(sampler: SeededSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_epoch_is_the_larger_domain_a_by_index_b_random_or_serial(tmp_path):
    write_images(tmp_path / "trainA", 3, seed=1)
    write_images(tmp_path / "trainB", 5, seed=2)
    ds = datamodule(tmp_path).train_set
    assert len(ds) == 5
    assert [Path(ds[i]["path_a"]).name for i in range(5)] == [
        "img_000.png",
        "img_001.png",
        "img_002.png",
        "img_000.png",
        "img_001.png",
    ]
    serial_ds = datamodule(tmp_path, serial_batches=True).train_set
    for shuffle, dataset in ((True, ds), (False, serial_ds)):
        sampler = SeededSampler(dataset, seed=0, shuffle=shuffle)
        orders, partners = [], set()
        for epoch in range(6):
            keys = _epoch(sampler, epoch)
            orders.append([i for i, _ in keys])
            partners |= {(key[0], Path(dataset[key]["path_b"]).name) for key in keys}
        assert all(sorted(order) == list(range(5)) for order in orders)  # each index once per epoch
        if shuffle:  # a new shuffle each epoch; B drawn at random: an index meets several B images
            assert len({tuple(o) for o in orders}) > 1
            assert len(partners) > 10 and {b for _, b in partners} == {f"img_{i:03d}.png" for i in range(5)}
        else:  # serial_batches: in order, B by index, as the reference
            assert orders == [list(range(5))] * 6
            assert partners == {(i, f"img_{i:03d}.png") for i in range(5)}
    batch = next(iter(datamodule(tmp_path).train_dataloader()))
    assert batch["a"].shape == (1, 3, 32, 32) and batch["a"].min() >= -1 and batch["a"].max() <= 1


def _batches(loader, sampler, epochs=(0, 1)) -> list[dict]:
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out += [batch for batch in loader]
    return out


def test_training_batches_are_the_same_for_any_worker_count_and_leave_the_global_rng_alone(tmp_path):
    """0 workers, 1 worker (fresh each epoch, prefetch 4), 2 persistent workers: bitwise the same batches."""
    root = make_dataset(tmp_path, n_train=6)
    dm = datamodule(root, batch_size=2, seed=3)
    loader = dm.train_dataloader()
    before = torch.get_rng_state()
    reference = _batches(loader, loader.sampler)
    assert torch.equal(torch.get_rng_state(), before)  # the networks' random draws never depend on data loading
    others = [datamodule(root, batch_size=2, seed=3, num_workers=2, persistent_workers=True).train_dataloader()]
    one = SeededSampler(dm.train_set, seed=3)
    others.append(DataLoader(dm.train_set, batch_size=2, sampler=one, num_workers=1, prefetch_factor=4))
    for other in others:
        batches = _batches(other, other.sampler)
        assert len(batches) == len(reference) == 6
        for got, want in zip(batches, reference):
            assert got["path_a"] == want["path_a"] and got["path_b"] == want["path_b"]
            assert torch.equal(got["a"], want["a"]) and torch.equal(got["b"], want["b"])  # same crops and flips
    epoch0, epoch1 = reference[:3], reference[3:]
    assert [b["path_a"] for b in epoch0] != [b["path_a"] for b in epoch1]  # each epoch its own shuffle


def test_sampler_ranks_and_resume_position():
    """Each rank its share with its own draws; a resumed epoch skips exactly the samples already trained on."""
    dataset = list(range(8))
    ranks = [SeededSampler(dataset, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    shares = [_epoch(s, 0) for s in ranks]
    assert sorted(i for share in shares for i, _ in share) == list(range(8))  # split, none seen twice
    full = _epoch(SeededSampler(dataset, seed=0), 1)
    resumed = SeededSampler(dataset, seed=0, resume=(1, 3))
    assert list(resumed) == full[3:]  # before set_epoch too: Lightning may iterate first
    assert _epoch(resumed, 1) == full[3:] and _epoch(resumed, 2) == _epoch(SeededSampler(dataset, seed=0), 2)
    assert full != _epoch(SeededSampler(dataset, seed=1), 1)  # the seed decides order and draws


def test_explicit_folder_lists_recursive_discovery_and_direction(tmp_path):
    write_images(tmp_path / "a1" / "nested" / "deep", 2, seed=1)
    write_images(tmp_path / "a2", 1, seed=2)
    write_images(tmp_path / "b", 4, seed=3)
    (tmp_path / "a2" / "notes.txt").write_text("not an image")
    dm = UnpairedDataModule(
        train_a=[str(tmp_path / "a1"), str(tmp_path / "a2")], train_b=str(tmp_path / "b"), num_workers=0
    )
    dm.setup("fit")
    assert len(dm.train_set.reader_a.files) == 3 and len(dm.train_set.reader_b.files) == 4
    swapped = UnpairedDataModule(
        train_a=[str(tmp_path / "a1"), str(tmp_path / "a2")],
        train_b=str(tmp_path / "b"),
        direction="BtoA",
        num_workers=0,
    )
    swapped.setup("fit")
    assert len(swapped.train_set.reader_a.files) == 4  # the model's A (source) now reads the B folder
    assert len(swapped.val_sets["a"]) <= 8  # no test folders: validation falls back to training images


def test_max_dataset_size_limits_each_domain(tiny_dataset):
    dm = datamodule(tiny_dataset, max_dataset_size=2)
    assert len(dm.train_set) == 2


@pytest.mark.parametrize(
    "preprocess,shape",
    [
        ("resize_and_crop", (32, 32)),
        ("crop", (32, 32)),
        ("scale_width", (48, 36)),
        ("scale_width_and_crop", (32, 32)),
        ("none", (80, 60)),
    ],
)
def test_preprocess_modes(preprocess, shape):
    img = torch.rand(3, 81, 61)  # H x W, not multiples of 4
    out = build_transform(preprocess, load_size=36, crop_size=32, flip=True)(img)
    assert out.shape[-2:] == shape
    assert out.min() >= -1 and out.max() <= 1


def test_validation_transform_is_deterministic():
    t = build_transform("resize_and_crop", 36, 32, flip=True, train=False)
    img = torch.rand(3, 50, 40)
    assert torch.equal(t(img), t(img))


def test_missing_root_and_empty_folder_fail_before_training_with_the_path(tmp_path):
    with pytest.raises(DataError, match=r"trainA folder .*nowhere/trainA does not exist"):
        datamodule(tmp_path / "nowhere")
    (tmp_path / "trainA").mkdir()
    write_images(tmp_path / "trainB", 1)
    with pytest.raises(DataError, match="hold no images"):
        datamodule(tmp_path)
    with pytest.raises(DataError, match="data.root"):
        UnpairedDataModule()


def test_corrupt_file_fails_fast_or_is_skipped_before_training(tiny_dataset, caplog):
    bad = tiny_dataset / "trainA" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match="broken.png"):
        datamodule(tiny_dataset, on_bad_image="fail")
    with caplog.at_level(logging.WARNING):
        dm = datamodule(tiny_dataset, on_bad_image="skip")
    assert "broken.png" in caplog.text
    assert all("broken" not in f for f in dm.train_set.reader_a.files)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_file_found_corrupt_mid_epoch_is_skipped_and_counted_or_fails_with_its_name(tmp_path):
    folder = tmp_path / "trainA"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=95)
    write_images(tmp_path / "trainB", 3)
    truncate(folder / "0.jpg")  # header intact: passes the pre-flight check, fails when decoded
    dm = datamodule(tmp_path, on_bad_image="skip")
    sample = dm.train_set[0]
    assert Path(sample["path_a"]).name == "1.jpg" and sample["skipped"] == 1
    dm_fail = datamodule(tmp_path, on_bad_image="fail")
    with pytest.raises(ImageLoadError, match="0.jpg"):
        dm_fail.train_set[0]


def test_image_modes_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8), "L").save(gray)
    assert load_image(gray, 3).image.shape == (3, 10, 12)
    assert load_image(gray, 1).image.shape == (1, 10, 12)

    pal = tmp_path / "palette.png"
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).convert("P").save(pal)
    assert load_image(pal, 3).image.shape == (3, 10, 12)

    rgba = tmp_path / "rgba.png"
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red, fully transparent on the left half
    arr[:, 2:, 3] = 255
    Image.fromarray(arr, "RGBA").save(rgba)
    loaded = load_image(rgba, 3)
    assert torch.allclose(loaded.image[:, :, :2], torch.ones(3, 4, 2))  # composited over white
    assert torch.allclose(loaded.image[:, :, 2:], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 4, 2))
    assert loaded.alpha is not None and loaded.alpha[0, 0, 0] == 0 and loaded.alpha[0, 0, 3] == 1

    deep = tmp_path / "16bit.png"
    values = (np.arange(64, dtype=np.uint16) * 1000 + 7).reshape(8, 8)
    Image.fromarray(values).save(deep)  # PIL writes mode I;16
    img = load_image(deep, 1).image
    assert torch.allclose(img[0], torch.from_numpy(values.astype(np.float32) / 65535), atol=1e-6)
    assert len(torch.unique(img)) == 64  # no collapse to 8 bits


def test_image_smaller_than_crop_is_upscaled(tmp_path):
    write_images(tmp_path / "trainA", 2, size=(20, 12))
    write_images(tmp_path / "trainB", 2, size=(40, 40))
    dm = datamodule(tmp_path, preprocess="crop")
    assert dm.train_set[0]["a"].shape == (3, 32, 32)


def test_grayscale_domain_end_to_end(tmp_path):
    write_images(tmp_path / "trainA", 2, mode="L")
    write_images(tmp_path / "trainB", 2, mode="RGBA")
    dm = datamodule(tmp_path, channels_a=1, channels_b=3)
    sample = dm.train_set[0]
    assert sample["a"].shape[0] == 1 and sample["b"].shape[0] == 3


def test_demo_dataset_is_deterministic(tmp_path):
    from cyclegan_lightning.data.demo import build_demo_dataset

    one = build_demo_dataset(tmp_path / "one", n_train=3, n_test=1, size=32)
    two = build_demo_dataset(tmp_path / "two", n_train=3, n_test=1, size=32)
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(files) == 10  # train 3 + 3, test 1 + 1, truth 1 + 1
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    a, b = load_image(one / "trainA" / "0000.png").image, load_image(one / "trainB" / "0000.png").image
    assert not torch.allclose(a, b, atol=0.1)  # the B style differs visibly
