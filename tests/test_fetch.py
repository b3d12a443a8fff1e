"""``python -m cyclegan_lightning.fetch`` and ``ckpt_path=pretrained:<name>`` end to end, against a local HTTP server
standing in for the reference's host (never the network): a dataset lands where ``experiment=<name>`` reads it, a
missing one names the fetch command, and a published generator is fetched and translates."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import hydra
import pytest
import reference_networks as ref
import torch
from conftest import CONF_DIR, ROOT, compose_train_cfg, write_images
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from local_http import local_server

from cyclegan_lightning.downloads import UnknownArtefactError, load_registry
from cyclegan_lightning.downloads import registry as registry_module
from cyclegan_lightning.errors import DataError
from cyclegan_lightning.fetch import listing, run
from cyclegan_lightning.inference import build_translator
from cyclegan_lightning.inference.predict import run_prediction


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The local server, with every registry URL pointed at it (``<server>/<kind>/<file name>``); an empty cache and
    downloads allowed."""
    monkeypatch.setenv("CYCLEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("CYCLEGAN_MIRROR", raising=False)
    real = load_registry()
    with local_server() as server:
        moved = {
            kind: {n: dataclasses.replace(a, urls=(f"{server.url}/{kind}/{a.filename}",)) for n, a in named.items()}
            for kind, named in real.artefacts.items()
        }
        monkeypatch.setattr(registry_module, "load_registry", lambda: registry_module.Registry(moved, real.excluded))
        yield server


def horse2zebra_zip(tmp_path: Path) -> bytes:
    """A small archive in the published layout: one top folder ``horse2zebra/`` with the four image folders."""
    src = tmp_path / "zip_src" / "horse2zebra"
    for i, folder in enumerate(("trainA", "trainB", "testA", "testB")):
        write_images(src / folder, 3, seed=i)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in sorted(src.rglob("*.png")):
            z.write(path, path.relative_to(src.parent).as_posix())
    return buf.getvalue()


def fetch_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("fetch", overrides=["progress=false", "timeout=10", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def experiment_datamodule(project: Path, monkeypatch):
    """``experiment=horse2zebra`` composed as train.py would in ``project`` (its default data.root), set up."""
    monkeypatch.setenv("CYCLEGAN_ROOT", str(project))
    cfg = compose_train_cfg(["experiment=horse2zebra", "logger=csv"], project / "run")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    return cfg, datamodule


def test_a_dataset_lands_where_its_experiment_reads_it(host, tmp_path, monkeypatch, caplog):
    host.files["/dataset/horse2zebra.zip"] = horse2zebra_zip(tmp_path)
    data = tmp_path / "project" / "data"
    assert run(fetch_cfg("dataset=horse2zebra", f"data_dir={data}")) == data / "horse2zebra"
    assert sorted(p.name for p in (data / "horse2zebra").iterdir()) == ["testA", "testB", "trainA", "trainB"]
    assert list(data.iterdir()) == [data / "horse2zebra"]  # no staging folder left
    assert not (tmp_path / "cache" / "dataset" / "horse2zebra.zip").exists()  # the zip goes once unpacked

    with caplog.at_level(logging.INFO):  # again: nothing to do, and it says so
        run(fetch_cfg("dataset=horse2zebra", f"data_dir={data}"))
    assert host.requests == ["/dataset/horse2zebra.zip"] and "already there" in caplog.text

    cfg, datamodule = experiment_datamodule(tmp_path / "project", monkeypatch)  # no data.root given
    assert Path(cfg.data.root) == data / "horse2zebra" and len(datamodule.train_set) == 3


def test_a_missing_dataset_names_the_fetch_command(tmp_path, monkeypatch):
    with pytest.raises(DataError) as info:
        experiment_datamodule(tmp_path / "project", monkeypatch)
    fetch_line = f"python -m cyclegan_lightning.fetch dataset=horse2zebra data_dir={tmp_path / 'project' / 'data'}"
    assert fetch_line in str(info.value)


def test_a_folder_in_the_way_is_never_written_over(host, tmp_path):
    (tmp_path / "data" / "horse2zebra" / "trainA").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no trainB/, testA/, testB/; it is never written over"):
        run(fetch_cfg("dataset=horse2zebra", f"data_dir={tmp_path / 'data'}"))
    assert host.requests == []


def test_a_pretrained_generator_is_fetched_and_translates(host, tmp_path):
    torch.manual_seed(0)
    theirs = ref.ResnetGenerator(3, 3, 8, ref.get_norm_layer("instance"), False, 2).eval()  # reference layout
    buf = io.BytesIO()
    torch.save(theirs.state_dict(), buf)
    host.files["/pretrained/horse2zebra.pth"] = buf.getvalue()

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=["ckpt_path=pretrained:horse2zebra", "input=in", "output_dir=out", "translator.device=cpu"],
        )
    GlobalHydra.instance().clear()
    translator = build_translator(cfg.ckpt_path, cfg.translator)  # what predict.py does
    assert translator.directions == ("a2b",)
    assert translator.loaded.path == tmp_path / "cache" / "pretrained" / "horse2zebra.pth"

    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want = ((theirs(x * 2 - 1) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(translator.translate_tensor(x), want, atol=1e-4, rtol=0)
    write_images(tmp_path / "in", 2, size=(24, 20))
    assert run_prediction(translator, str(tmp_path / "in"), tmp_path / "out", progress=False).translated == 2
    assert host.requests == ["/pretrained/horse2zebra.pth"]


def test_an_unknown_pretrained_name_lists_the_known_ones():
    with pytest.raises(UnknownArtefactError, match="no pretrained named 'horse2donkey'; known: .*style_monet"):
        build_translator("pretrained:horse2donkey", {"device": "cpu"})


def test_the_command_says_what_is_wrong_in_one_line_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "cyclegan_lightning.fetch", "dataset=horse2donkey"],
        cwd=ROOT,
        env={"CYCLEGAN_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "known: " in lines[0] and "horse2zebra" in lines[0]


def test_the_listing_shows_every_name_and_what_is_verified():
    text = listing()
    registry = load_registry()
    for named in registry.artefacts.values():
        for name, art in named.items():
            line = next(li for li in text.splitlines() if li.split()[:1] == [name] and art.about in li)
            assert ("sha256" if art.sha256 else "unverified") in line
    assert re.search(r"cityscapes +Cityscapes' licence", text)


FETCH_COMMAND = re.compile(r"python3? -m cyclegan_lightning\.fetch\b([^\n`|#;)\"']*)")
PRETRAINED = re.compile(r"pretrained[:=](\w+)")


def documented(pattern: re.Pattern) -> list[tuple[str, re.Match]]:
    sources = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "conf").rglob("*.yaml")]
    sources += [ROOT / "cyclegan_lightning" / "fetch.py"]
    return [(f"{s.name}", m) for s in sources for m in pattern.finditer(s.read_text())]


@pytest.mark.parametrize("where,match", documented(FETCH_COMMAND), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_fetch_commands_compose(where, match):
    fetch_cfg(*match.group(1).replace("<name>", "horse2zebra").split())


def test_documented_names_exist():
    registry = load_registry()
    names = {m.group(1) for _, m in documented(PRETRAINED)} | {
        m.group(1).split("=")[1] for _, m in documented(re.compile(r"fetch (dataset=\w+)"))
    }
    known = set(registry.names("pretrained")) | set(registry.names("dataset")) | {"name"}
    assert names and names <= known, names - known
