"""Checkpoints from strangers: a pickle payload never runs (resume, load_from_checkpoint, predict's loader), and a
newer format or another architecture is refused with a message saying what differs."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch

from cyclegan_lightning import CycleGAN
from cyclegan_lightning.checkpoints import format as checkpoint_format
from cyclegan_lightning.checkpoints.generators import load_generators
from cyclegan_lightning.checkpoints.loading import safe_load
from cyclegan_lightning.errors import CheckpointError
from cyclegan_lightning.training.run import run_training


class Payload:
    """Unpickling this writes ``marker``: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of a one-epoch tiny run (shared by the tests of this file; each copies what it changes)."""
    from conftest import compose_train_cfg, make_dataset

    root = tmp_path_factory.mktemp("ckpt")
    data = make_dataset(root / "data")
    cfg = compose_train_cfg([f"data.root={data}", "logger=none", "trainer.max_epochs=1"], root / "run")
    run_training(cfg)
    return root / "run" / "checkpoints" / "last.ckpt"


def _poisoned_copy(trained: Path, tmp_path: Path, legacy: bool = False) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    ckpt["callbacks"] = {"innocent": Payload(marker)}
    path = tmp_path / ("evil_legacy.ckpt" if legacy else "evil.ckpt")
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path, marker


def test_the_payload_is_real(trained, tmp_path):
    """Sanity: loaded the unsafe way, the payload does create its file; so the tests below prove something."""
    path, marker = _poisoned_copy(trained, tmp_path)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("legacy", [False, True])
def test_load_from_checkpoint_refuses_payload_without_running_it(trained, tmp_path, monkeypatch, legacy):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user environment that flips torch's default
    path, marker = _poisoned_copy(trained, tmp_path, legacy)
    with pytest.raises(
        CheckpointError, match=r"evil.*refused.*pickled Python objects \(GLOBAL .*exec\).*Nothing from it was executed"
    ):
        CycleGAN.load_from_checkpoint(path, map_location="cpu")
    with pytest.raises(CheckpointError, match="weights_only=True only"):
        CycleGAN.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    assert not marker.exists()


def test_resume_refuses_payload_without_running_it(trained, tmp_path, train_cfg, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = _poisoned_copy(trained, tmp_path)
    with pytest.raises(CheckpointError, match=r"refused.*pickled Python objects"):
        run_training(train_cfg("trainer.max_epochs=2", f"ckpt_path={path}"))
    assert not marker.exists()


def test_resume_inside_fit_also_loads_weights_only(trained, tmp_path, train_cfg, monkeypatch):
    """Even past the pre-check (patched away here), Lightning's own load runs with weights_only=True."""
    import cyclegan_lightning.training.run as training_mod

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setattr(training_mod, "safe_load", lambda *a, **k: {})
    path, marker = _poisoned_copy(trained, tmp_path)
    with pytest.raises((pickle.UnpicklingError, CheckpointError)):
        run_training(train_cfg("trainer.max_epochs=2", f"ckpt_path={path}"))
    assert not marker.exists()


def test_predict_loader_refuses_payload_without_running_it(trained, tmp_path, monkeypatch):
    from cyclegan_lightning.checkpoints.generators import load_generators

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = _poisoned_copy(trained, tmp_path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_generators(path)
    state = {"model.1.weight": torch.zeros(1), "evil": Payload(marker)}  # a reference-style .pth
    torch.save(state, tmp_path / "latest_net_G.pth")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_generators(tmp_path / "latest_net_G.pth")
    assert not marker.exists()


@pytest.mark.slow
def test_predict_script_refuses_payload(trained, tmp_path):
    """The predict.py command line, end to end, in a subprocess: refused, nothing written, no traceback."""
    import subprocess
    import sys

    path, marker = _poisoned_copy(trained, tmp_path)
    inputs = tmp_path / "in"
    from conftest import write_images

    write_images(inputs, 1)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "predict.py"),
            f"ckpt_path={path}",
            f"input={inputs}",
            f"output_dir={tmp_path / 'out'}",
            "translator.device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env=os.environ | {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    assert proc.returncode != 0 and "pickled Python objects" in proc.stdout + proc.stderr
    assert not marker.exists()


def test_newer_format_is_refused_with_upgrade_hint(trained, tmp_path, train_cfg):
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    ckpt["cyclegan_lightning"]["format"] = checkpoint_format.CHECKPOINT_FORMAT + 1
    path = tmp_path / "future.ckpt"
    torch.save(ckpt, path)
    newer = checkpoint_format.CHECKPOINT_FORMAT + 1
    for load in (  # one rule for every reader: loading a model, resuming, and loading generators (predict, export)
        lambda: CycleGAN.load_from_checkpoint(path, map_location="cpu"),
        lambda: run_training(train_cfg("trainer.max_epochs=2", f"ckpt_path={path}")),
        lambda: load_generators(path),
    ):
        with pytest.raises(CheckpointError, match=rf"format {newer}, newer than this .* reads.*Upgrade"):
            load()


def test_not_our_checkpoint_is_refused(trained, tmp_path):
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    del ckpt["cyclegan_lightning"]
    torch.save(ckpt, tmp_path / "other.ckpt")
    for load in (CycleGAN.load_from_checkpoint, load_generators):  # the marker rule holds for every reader
        with pytest.raises(CheckpointError, match="not written by cyclegan_lightning"):
            load(tmp_path / "other.ckpt")


def test_other_architecture_is_refused_naming_what_differs(trained, tmp_path, train_cfg):
    # the tiny run is resnet_6blocks with n_blocks=1, ngf=8: resume it with ngf=16
    with pytest.raises(
        CheckpointError,
        match=r"(?s)different architecture.*of another shape.*checkpoint: .*ngf=8.*this model: .*ngf=16",
    ):
        run_training(train_cfg("trainer.max_epochs=2", f"ckpt_path={trained}", "model.generator.ngf=16"))
    with pytest.raises(CheckpointError, match=r"different architecture.*missing"):
        run_training(train_cfg("trainer.max_epochs=2", f"ckpt_path={trained}", "model.generator.n_blocks=2"))
    with pytest.raises(CheckpointError, match="different architecture"):  # hyperparameters overridden at load
        CycleGAN.load_from_checkpoint(
            trained,
            map_location="cpu",
            generator={"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 1},
        )


def test_truncated_and_empty_checkpoints(trained, tmp_path):
    data = trained.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cut.ckpt is truncated"):
        safe_load(tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match="empty"):
        safe_load(tmp_path / "empty.ckpt")


def test_good_checkpoint_still_loads(trained):
    model = CycleGAN.load_from_checkpoint(trained, map_location="cpu")
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)
