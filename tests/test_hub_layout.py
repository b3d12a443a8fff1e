"""Models in the Hugging Face hub layout (config.json + model.safetensors + README.md): a save/load round trip gives
bit-identical translations (CycleGAN run, CUT with an EMA), predict/evaluate/torch.hub accept the folder, the model
card carries the run's figures, a broken folder is one CheckpointError, and writing is all-or-nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_dataset
from probes import bare_trainer
from safetensors.torch import load_file, save_file
from test_commands import command
from test_cut import DISC, batch, export_cfg
from test_evaluation import evaluate_cfg, evaluate_run
from test_predict import load_script, predict, predict_cfg
from torch.utils.data import DataLoader

from cyclegan_lightning.checkpoints import pretrained_folder
from cyclegan_lightning.errors import CheckpointError, ConfigError, OutputError
from cyclegan_lightning.inference import Translator, load_generators
from cyclegan_lightning.models import CUT
from cyclegan_lightning.runs import read_metrics_by_epoch

EAGER = {"device": "cpu", "tile_size": None, "backend": "eager"}


def translations(translator: Translator, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {d: translator.translate_tensor(x, d) for d in translator.directions}


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory) -> tuple[Path, Path]:
    """(last.ckpt of a tiny CycleGAN run, the folder ``save_pretrained`` wrote from it)."""
    ckpt = tiny_runs[1][0] / "checkpoints" / "last.ckpt"
    folder = tmp_path_factory.mktemp("hub") / "model"
    Translator.from_checkpoint(ckpt, **EAGER).save_pretrained(folder)
    return ckpt, folder


def test_cyclegan_run_round_trips_bit_identically(exported, monkeypatch):
    ckpt, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == pretrained_folder.FORMAT and config["format_version"] == pretrained_folder.FORMAT_VERSION
    assert config["directions"] == ["a2b", "b2a"] and config["weights"] == "trained"
    assert config["generators"]["a2b"]["_target_"] == "cyclegan_lightning.networks.ResnetGenerator"
    assert config["generators"]["a2b"]["n_blocks"] == 1 and config["generators"]["b2a"]["ngf"] == 8  # TINY
    assert config["training"]["hyper_parameters"]["lambda_cycle"] == 5.0  # run 0 of the sweep: lambda_cycle=5
    keys = load_file(folder / "model.safetensors")
    assert {k.split(".", 1)[0] for k in keys} == {"a2b", "b2a"}

    original = Translator.from_checkpoint(ckpt, **EAGER)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a model folder must load without pickle"))
    loaded = Translator.from_pretrained(folder, **EAGER)
    assert loaded.loaded.source == "pretrained"
    x = torch.rand(2, 3, 29, 37, generator=torch.Generator().manual_seed(0))  # odd sizes: padded and cropped back
    before, after = translations(original, x), translations(loaded, x)
    assert set(after) == {"a2b", "b2a"}
    for d in before:
        assert torch.equal(before[d], after[d]), d
    assert not torch.equal(after["a2b"], after["b2a"])  # really two different generators, each in its place


def test_cut_with_an_ema_exports_the_weights_the_translator_uses(tmp_path):
    torch.manual_seed(0)
    generator = {"_target_": "cyclegan_lightning.networks.ResnetGenerator", "ngf": 4, "n_blocks": 2}
    generator |= {"downsample": "antialias", "upsample": "antialias"}  # the official CUT layout, filt buffers too
    model = CUT(generator, DISC, nce_layers=[0, 4, 8], num_patches=8, projection_dim=16, ema_decay=0.5)
    data = batch()
    trainer = bare_trainer(max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, train_dataloaders=DataLoader([{"a": data["a"][i], "b": data["b"][i]} for i in range(2)]))
    ckpt = tmp_path / "cut.ckpt"
    trainer.save_checkpoint(ckpt)

    export = load_script("export")
    ema_folder, _ = export.run(export_cfg(ckpt, tmp_path / "ema", "format=hf"))
    trained_folder, _ = export.run(export_cfg(ckpt, tmp_path / "trained", "format=hf", "use_ema=false"))
    assert json.loads((ema_folder / "config.json").read_text())["weights"] == "ema"
    assert json.loads((trained_folder / "config.json").read_text())["weights"] == "trained"
    assert {k.split(".", 1)[0] for k in load_file(ema_folder / "model.safetensors")} == {"a2b"}  # one direction

    x = torch.rand(1, 3, 21, 18, generator=torch.Generator().manual_seed(1))
    from_ckpt = Translator.from_checkpoint(ckpt, **EAGER)  # the translator's choice: the EMA
    from_folder = Translator.from_pretrained(ema_folder, **EAGER)
    assert from_folder.directions == ("a2b",)
    assert torch.equal(from_folder.translate_tensor(x), from_ckpt.translate_tensor(x))
    trained = Translator(load_generators(ckpt, use_ema=False), **EAGER)
    assert torch.equal(
        Translator.from_pretrained(trained_folder, **EAGER).translate_tensor(x), trained.translate_tensor(x)
    )
    assert not torch.equal(trained.translate_tensor(x), from_ckpt.translate_tensor(x))  # the EMA really differs
    with pytest.raises(ConfigError, match="no b2a generator"):
        from_folder.translate_tensor(x, "b2a")


def test_model_card_carries_the_runs_figures(exported, tiny_runs):
    _, folder = exported
    card = (folder / "README.md").read_text()
    head = card.split("---")[1]
    assert "library_name: cyclegan-lightning" in head and "pipeline_tag: image-to-image" in head
    assert "- image-to-image" in head and "license: other" in head
    run = tiny_runs[1][0]
    swd = read_metrics_by_epoch(run, "val/")[1]["val/swd"]  # the run trained one epoch: best = last = epoch 1
    assert f"| `val/swd` | {swd:.4g} | {swd:.4g} |" in card
    assert "| metric | best (epoch 1) | last (epoch 1) |" in card
    assert f"data.root: `{tiny_runs[0]}`" in card and "lambda_cycle=5," in card and "epochs trained: 1" in card
    assert "![Sample grid of the run at its end](samples.png)" in card
    assert (folder / "samples.png").read_bytes() == (run / "samples" / "latest.png").read_bytes()
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["metrics"]["last"]["values"]["val/swd"] == swd  # kept for a later re-export


def test_predict_and_evaluate_take_the_folder_as_ckpt_path(exported, tiny_runs, tmp_path):
    ckpt, folder = exported
    root = tiny_runs[0]
    from_folder = predict(predict_cfg(folder, root / "testA", tmp_path / "folder", "translator.backend=eager"))
    from_ckpt = predict(predict_cfg(ckpt, root / "testA", tmp_path / "ckpt", "translator.backend=eager"))
    assert from_folder.translated == from_ckpt.translated == 3
    for out in sorted((tmp_path / "ckpt").rglob("*.png")):
        assert out.read_bytes() == (tmp_path / "folder" / out.relative_to(tmp_path / "ckpt")).read_bytes()
    run = tmp_path / "run"  # a model folder inside a run folder is evaluated itself, not the run's checkpoints
    shutil.copytree(tiny_runs[1][0], run)
    shutil.copytree(folder, run / "hf")
    cfg = evaluate_cfg(f"ckpt_path={run / 'hf'}", "fid.enabled=false", f"output_dir={tmp_path / 'ev'}")
    (result,) = evaluate_run()(cfg)["checkpoints"]  # on the run's own test set
    assert result["which"] == "hf" and result["checkpoint"] == str(run / "hf")
    assert set(result["metrics"]) == {"a2b", "b2a"} and result["metrics"]["a2b"]["n_images"] == 3


def break_weights_missing(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def break_config_missing(folder: Path) -> None:
    (folder / "config.json").unlink()


def break_newer_version(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 99}))


def break_other_format(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))


def break_truncated_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def break_foreign_target(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["generators"]["a2b"] = {"_target_": "os.system", "command": "echo pwned"}
    (folder / "config.json").write_text(json.dumps(config))


def break_missing_weight(folder: Path) -> None:
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "a2b.model.1.weight"}, folder / "model.safetensors")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (break_weights_missing, "has no model.safetensors"),
        (break_config_missing, "has no config.json"),
        (break_newer_version, "format_version 99, newer"),
        (break_other_format, "not a cyclegan-lightning model"),
        (break_truncated_weights, "truncated or not a safetensors file"),
        (break_foreign_target, "refused"),
        (break_missing_weight, "1 weight\\(s\\) missing \\(e.g. model.1.weight\\)"),
    ],
)
def test_a_broken_folder_is_one_checkpoint_error(exported, tmp_path, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(exported[1], folder)
    damage(folder)
    with pytest.raises(CheckpointError, match=message) as err:
        load_generators(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_writing_is_all_or_nothing(exported, tmp_path, monkeypatch):
    ckpt, _ = exported
    translator = Translator.from_checkpoint(ckpt, **EAGER)
    folder = translator.save_pretrained(tmp_path / "model")
    before = (folder / "model.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pretrained_folder.shutil, "copyfile", disk_full)  # fails after the weights are written
    with pytest.raises(OutputError, match="nothing was changed there"):
        translator.save_pretrained(folder)
    assert (folder / "model.safetensors").read_bytes() == before and load_generators(folder).generators
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="folder of other files"):
        translator.save_pretrained(other)
    assert (other / "mine.txt").read_text() == "keep me"


def test_torch_hub_load_local(exported):
    _, folder = exported
    translator = torch.hub.load(str(ROOT), "cyclegan", source="local", ckpt_path=str(folder), **EAGER)
    x = torch.rand(1, 3, 19, 26)
    want = Translator.from_pretrained(folder, **EAGER)
    assert torch.equal(translator.translate_tensor(x, "b2a"), want.translate_tensor(x, "b2a"))
    generator = torch.hub.load(str(ROOT), "generator", source="local", ckpt_path=str(folder), direction="b2a")
    with torch.no_grad():
        assert torch.equal(((generator(x * 2 - 1) + 1) / 2).clamp(0, 1), want.translate_tensor(x, "b2a"))
    with pytest.raises(ValueError, match="exactly one of"):
        torch.hub.load(str(ROOT), "cyclegan", source="local")


def test_export_command_writes_the_folder_beside_the_run(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[1][1], run)
    result = command("export", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "format=hf")
    folder = run / "export" / "last" / "hf"
    assert result.returncode == 0, result.stdout
    assert "exported" in result.stdout and "checked bit-identical" in result.stdout
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    x = torch.rand(1, 3, 16, 16)
    want = Translator.from_checkpoint(run / "checkpoints" / "last.ckpt", **EAGER).translate_tensor(x)
    assert torch.equal(Translator.from_pretrained(folder, **EAGER).translate_tensor(x), want)
    with pytest.raises(CheckpointError, match="not a model folder"):  # a folder of something else
        load_script("export").run(export_cfg(make_dataset(tmp_path / "data", 1, 1), tmp_path / "out", "format=hf"))


def test_repo_ids_go_through_huggingface_hub_which_tests_replace(exported, monkeypatch):
    """No network: huggingface_hub's snapshot_download and HfApi are replaced by fakes that record their calls."""
    hub = pytest.importorskip("huggingface_hub")
    _, folder = exported
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    translator = Translator.from_pretrained("me/horse2zebra", **EAGER)
    assert translator.directions == ("a2b", "b2a")
    (repo_id, kwargs), *_ = calls
    assert repo_id == "me/horse2zebra" and kwargs["local_files_only"] is True  # CYCLEGAN_OFFLINE=1 (conftest)
    assert {"config.json", "model.safetensors"} <= set(kwargs["allow_patterns"])

    uploaded = {}

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok):
            uploaded["repo"] = (repo_id, private)

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            return "https://hub/commit/1"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    assert translator.push_to_hub("me/copy", private=True) == "https://hub/commit/1"
    files = ["README.md", "config.json", "model.safetensors", "samples.png"]  # the card's grid carried over
    assert uploaded == {"repo": ("me/copy", True), "files": files}

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ConfigError, match=r"cyclegan-lightning\[hub\]"):
        Translator.from_pretrained("me/other", **EAGER)
