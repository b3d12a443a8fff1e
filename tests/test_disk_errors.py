"""A full disk or a permission error while writing a checkpoint, a sample grid or a prediction: every earlier file
stays intact, no half-written file is left, and the message says what happened. Prediction never writes over its
inputs and resumes a half-done folder without redoing finished images.

The disk is simulated by patching the writer so that it writes part of the file and then fails with ENOSPC, as a
real full disk does (no tmpfs mount needed, so this runs unprivileged and in containers)."""

from __future__ import annotations

import errno
import hashlib
import logging
from pathlib import Path

import pytest
import torch
from conftest import write_images
from PIL import Image

from cyclegan_lightning.checkpoints import atomic as checkpoint_io
from cyclegan_lightning.errors import CheckpointError, CycleGANError, OutputError
from cyclegan_lightning.training.run import run_training


def _enospc(path=None) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", None if path is None else str(path))


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _leftovers(folder: Path) -> list[str]:
    return [
        p.name
        for p in folder.rglob("*")
        if p.is_file() and (".tmp" in p.name or p.name.startswith(".")) and p.name != ".run.lock"
    ]


# ---- checkpoints -------------------------------------------------------------------------------------------------
def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(train_cfg, monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch", 0) >= 1 and hasattr(f, "write"):
            f.write(b"\0" * 4096)  # part of the file made it to disk, then the disk filled up
            raise _enospc()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    cfg = train_cfg("trainer.max_epochs=3")
    with pytest.raises(
        CheckpointError,
        match=r"failed to write checkpoint .*\(No space left on device\).*(unchanged|no checkpoint was written)",
    ):
        run_training(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    good = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert good["epoch"] == 0  # epoch 1's checkpoint, complete and loadable
    assert not _leftovers(ckpts)


def test_permission_denied_on_the_checkpoint_folder(train_cfg, monkeypatch):
    def mkstemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(checkpoint_io.tempfile, "mkstemp", mkstemp)
    with pytest.raises(CheckpointError, match=r"failed to write checkpoint .*\.ckpt \(Permission denied\).*writable"):
        run_training(train_cfg("trainer.max_epochs=1"))


# ---- sample grids --------------------------------------------------------------------------------------------------
def test_disk_full_while_writing_a_sample_grid_keeps_earlier_grids(train_cfg, monkeypatch, caplog):
    real = checkpoint_io.save_image
    calls = {"n": 0}

    def save_image(image, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 wrote epoch_0001.png and latest.png; epoch 2 hits the full disk
            fp.write(b"\x89PNG half")  # into the temporary file the grid is written through
            raise _enospc(fp.name)
        return real(image, fp, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io, "save_image", save_image)
    cfg = train_cfg("trainer.max_epochs=2")
    samples = Path(cfg.paths.output_dir) / "samples"
    with caplog.at_level(logging.ERROR):
        run_training(cfg)  # a sample grid is not worth the run: logged, training goes on
    assert "could not write the sample grid" in caplog.text and "No space left" in caplog.text
    assert sorted(p.name for p in samples.iterdir()) == ["epoch_0001.png", "latest.png"]
    for name in ("epoch_0001.png", "latest.png"):
        Image.open(samples / name).load()  # complete PNGs, not the half-written one


# ---- predictions ---------------------------------------------------------------------------------------------------
@pytest.fixture
def translator(tmp_path):
    pytest.importorskip("cyclegan_lightning.inference.predict")
    from cyclegan_lightning.inference import build_translator
    from cyclegan_lightning.networks import ResnetGenerator

    torch.manual_seed(0)
    net = ResnetGenerator(input_nc=3, output_nc=3, ngf=8, n_blocks=1)
    torch.save(net.state_dict(), tmp_path / "latest_net_G.pth")  # a reference-style generator file
    return build_translator(tmp_path / "latest_net_G.pth", {"device": "cpu", "tile_size": None})


def test_disk_full_during_prediction_keeps_finished_outputs_and_resumes(tmp_path, translator, monkeypatch):
    from cyclegan_lightning.inference.predict import run_prediction

    inputs = tmp_path / "in"
    write_images(inputs, 6, size=(24, 20))
    before_inputs = _digest(inputs)
    out = tmp_path / "out"
    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th output hits the full disk mid-write
            fp.write(b"\x89PNG half")
            raise _enospc(fp.name)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OutputError, match=r"cannot write .*img_003.png: No space left on device.*run the same command"):
        run_prediction(translator, str(inputs), out, progress=False)
    done = _digest(out)
    assert sorted(done) == ["img_000.png", "img_001.png", "img_002.png"]  # finished ones, complete
    for name in done:
        Image.open(out / name).load()
    assert not _leftovers(out)
    assert _digest(inputs) == before_inputs

    monkeypatch.setattr(Image.Image, "save", real_save)  # space freed: run again
    summary = run_prediction(translator, str(inputs), out, progress=False)
    assert summary.skipped == 3 and summary.translated == 3 and not summary.failed
    after = _digest(out)
    assert all(after[k] == v for k, v in done.items())  # finished images were not redone
    assert sorted(k for k in after if k.endswith(".png")) == [f"img_{i:03d}.png" for i in range(6)]
    assert _digest(inputs) == before_inputs


def test_prediction_never_writes_over_its_inputs(tmp_path, translator):
    from cyclegan_lightning.inference.predict import run_prediction

    inputs = tmp_path / "in"
    write_images(inputs, 2)
    before = _digest(inputs)
    cases = (
        (str(inputs), inputs),  # the input folder itself
        (str(tmp_path), tmp_path),  # a parent folder searched recursively: outputs in/img_*.png would be the inputs
        (str(inputs / "img_000.png"), inputs),  # one file translated into its own folder
    )
    for source, output_dir in cases:
        with pytest.raises(CycleGANError, match="overwrite"):
            run_prediction(translator, source, output_dir, progress=False, overwrite=True, ext=".png")
        assert _digest(inputs) == before
