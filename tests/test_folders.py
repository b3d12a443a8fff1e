"""Data folders as they come from the web: symlink loops, unreadable files and folders, non-image files mixed in,
odd names, and tens of thousands of files (listing stays fast and small)."""

from __future__ import annotations

import builtins
import logging
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import write_images

from cyclegan_lightning.data import images as images_mod
from cyclegan_lightning.data.datamodule import UnpairedDataModule
from cyclegan_lightning.data.images import ImageLoadError, find_images, load_image
from cyclegan_lightning.errors import DataError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _dm(root: Path, **kwargs) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), load_size=36, crop_size=32, num_workers=0, **kwargs)


def test_symlink_loops_end_and_list_each_image_once(tmp_path):
    root = tmp_path / "trainA"
    write_images(root / "sub", 2)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # sub/loop -> trainA: a cycle
    (root / "self").symlink_to(".", target_is_directory=True)  # trainA/self -> trainA
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "up").symlink_to("../..", target_is_directory=True)
    found = find_images(root)  # a loop that were followed would never return (pytest-timeout ends it)
    assert sorted(p.name for p in found) == ["img_000.png", "img_001.png"]


def test_symlinked_folders_and_files_are_followed_broken_links_ignored(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere, 2)
    root = tmp_path / "trainA"
    write_images(root, 1, seed=3)
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # datasets assembled from links
    (root / "one.png").symlink_to(elsewhere / "img_000.png")
    (root / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    names = [p.relative_to(root).as_posix() for p in find_images(root)]
    assert names == ["img_000.png", "linked/img_000.png", "linked/img_001.png", "one.png"]


def test_unreadable_subfolder_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    root = tmp_path / "trainA"
    write_images(root, 1)
    write_images(root / "locked", 2)
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so refuse the way the kernel would for a normal user
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images_mod.os, "scandir", scandir)
    with caplog.at_level(logging.WARNING):
        found = find_images(root)
    assert [p.name for p in found] == ["img_000.png"]
    assert "locked" in caplog.text and "Permission denied" in caplog.text
    monkeypatch.undo()
    if not IS_ROOT:  # the real thing, where chmod means something
        (root / "locked").chmod(0)
        try:
            assert [p.name for p in find_images(root)] == ["img_000.png"]
        finally:
            (root / "locked").chmod(0o755)


def test_missing_or_unreadable_top_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "absent")


@pytest.fixture
def unreadable(monkeypatch):
    """Make files whose name contains 'secret' unreadable (PermissionError on open), even for root."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if "secret" in os.fspath(file) if isinstance(file, (str, os.PathLike)) else False:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


def test_unreadable_file_is_named(tmp_path, unreadable):
    path = write_images(tmp_path, 1)[0].rename(tmp_path / "secret.png")
    with pytest.raises(ImageLoadError, match=r"secret.png: permission denied"):
        load_image(path)


def test_unreadable_file_really_unreadable_when_not_root(tmp_path):
    if IS_ROOT:
        pytest.skip("root reads mode-000 files; covered by the simulated test")
    path = write_images(tmp_path, 1)[0]
    path.chmod(0)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(path)


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_preflight_names_unreadable_and_non_image_files(tmp_path, unreadable, policy, caplog):
    root = tmp_path / "data"
    for domain in "AB":
        write_images(root / f"train{domain}", 3, seed=ord(domain))
        write_images(root / f"test{domain}", 1, seed=ord(domain))
    a = root / "trainA"
    (a / "img_000.png").rename(a / "secret.png")
    (a / "notes.txt").write_text("not an image, not listed")
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (a / "readme.jpg").write_text("a text file named like an image")
    dm = _dm(root, on_bad_image=policy)
    if policy == "fail":
        with pytest.raises(DataError) as err:
            dm.setup("fit")
        assert "secret.png: permission denied" in str(err.value) and "readme.jpg" in str(err.value)
        return
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    paths = dm.train_set.reader_a.files
    assert sorted(Path(p).name for p in paths) == ["img_001.png", "img_002.png"]
    assert "secret.png" in caplog.text and "readme.jpg" in caplog.text


def test_names_with_spaces_and_non_ascii_characters(tmp_path):
    root = tmp_path / "dätä sét"
    names = ["with space.png", "ünïcødé ñame 猫.png", "emoji 🐴→🦓.png", "UPPER.PNG", "-dash.png", "'quote\".png"]
    src = write_images(tmp_path / "src", len(names))
    root.mkdir()
    for s, name in zip(src, names):
        s.rename(root / name)
    raw = os.fsencode(root) + b"/latin1-\xe9t\xe9.png"  # not valid UTF-8: Linux allows any bytes
    os.rename(write_images(tmp_path / "src2", 1)[0], raw)
    found = find_images(root)
    assert len(found) == len(names) + 1
    for path in found:
        assert load_image(path).image.shape == (3, 40, 40)
    (root / "with space.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="with space.png"):
        load_image(root / "with space.png")


@pytest.mark.slow
def test_a_hundred_thousand_files_list_in_bounded_memory(tmp_path):
    _many_files(tmp_path, 100_000, max_mib=40)


def test_ten_thousand_files_list_in_bounded_memory(tmp_path):
    # memory is bounded (tracemalloc is deterministic); the time is printed, not asserted: speed belongs to
    # benchmarks (measured 0.9 s / 3.1 MiB on a loaded 2-core box); 100,000 files in the slow test
    _many_files(tmp_path, 10_000, max_mib=8)


def _many_files(tmp_path: Path, n: int, max_mib: float) -> None:
    root = tmp_path / "many"
    per_dir = 1000
    for d in range(n // per_dir):
        sub = root / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            ext = ".png" if i % 10 else ".txt"  # a tenth are not images
            with open(sub / f"f{i:05d}{ext}", "wb"):
                pass
    start = time.perf_counter()
    found = find_images(root)
    seconds = time.perf_counter() - start
    tracemalloc.start()  # memory in a second pass: tracing slows the listing several-fold
    find_images(root)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert len(found) == n * 9 // 10
    assert found == sorted(found)
    print(f"find_images: {n} files in {seconds:.2f} s, peak {peak:.1f} MiB (tracemalloc)")
    assert peak < max_mib


def test_unreadable_top_folder_is_a_data_error_naming_it(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for domain in "AB":
        write_images(root / f"train{domain}", 2, seed=ord(domain))
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "trainB":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images_mod.os, "scandir", scandir)
    with pytest.raises(DataError, match=r"trainB folder .*trainB cannot be read: Permission denied"):
        _dm(root).setup("fit")
