"""The Inception (FID/KID) weights through the tool's one download path, against a local HTTP server (never the
network): fetched into the tool's cache and verified, a verified copy in torch's hub cache used as it is, and
nothing requested when fid.download=false or CYCLEGAN_OFFLINE=1."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging

import pytest
import torch
from local_http import local_server

from cyclegan_lightning.evaluation import INCEPTION, MissingWeightsError, resolve_inception_weights
from cyclegan_lightning.evaluation.metrics import torch_hub_inception_path


def stand_in_bytes() -> bytes:
    """A small state_dict shaped like the real file where we check it (an ``fc.weight`` tensor)."""
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2, 2)}, buf)
    return buf.getvalue()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(server, stand-in artefact): INCEPTION with the stand-in's URL and SHA-256; empty caches, downloads on."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("CYCLEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("CYCLEGAN_MIRROR", raising=False)
    body = stand_in_bytes()
    with local_server() as server:
        server.files[f"/{INCEPTION.filename}"] = body
        source = dataclasses.replace(
            INCEPTION, urls=(f"{server.url}/{INCEPTION.filename}",), sha256=hashlib.sha256(body).hexdigest()
        )
        yield server, source


def test_the_pinned_file_is_torch_fidelitys_with_its_hash_prefix():
    assert INCEPTION.kind == "metric-weights" and len(INCEPTION.urls) == 1
    assert INCEPTION.urls[0].startswith("https://github.com/toshas/torch-fidelity/releases/download/")
    assert INCEPTION.urls[0].endswith("/" + INCEPTION.filename)
    prefix = INCEPTION.filename.rsplit("-", 1)[1].split(".")[0]  # torch.hub names carry the sha256's first 8 digits
    assert INCEPTION.sha256 == "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
    assert INCEPTION.sha256.startswith(prefix)


def test_download_into_the_tools_cache_is_verified_and_announced(served, tmp_path, caplog):
    server, source = served
    with caplog.at_level(logging.INFO):
        path = resolve_inception_weights(source=source, timeout=10)
    assert path == tmp_path / "cache" / "metric-weights" / INCEPTION.filename
    assert path.read_bytes() == stand_in_bytes() and list(path.parent.iterdir()) == [path]
    assert str(path) in caplog.text and "verified" in caplog.text and "CYCLEGAN_OFFLINE=1" in caplog.text

    assert resolve_inception_weights(source=source) == path and len(server.requests) == 1  # cached


def test_a_verified_copy_in_torchs_hub_cache_is_used_without_a_request(served, tmp_path):
    server, source = served
    legacy = torch_hub_inception_path(source)
    assert legacy == tmp_path / "torch_home" / "hub" / "checkpoints" / INCEPTION.filename
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(stand_in_bytes())
    assert resolve_inception_weights(source=source) == legacy and server.requests == []

    legacy.write_bytes(b"altered")  # not the file: ignored, the verified download is used instead
    assert resolve_inception_weights(source=source).parent.name == "metric-weights" and len(server.requests) == 1


@pytest.mark.parametrize("how", ["config", "env"])
def test_offline_says_which_file_goes_where_and_requests_nothing(served, tmp_path, monkeypatch, how):
    server, source = served
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1" if how == "env" else "0")
    with pytest.raises(MissingWeightsError) as info:
        resolve_inception_weights(download=how != "config", source=source)
    msg = str(info.value)
    target = tmp_path / "cache" / "metric-weights" / INCEPTION.filename
    assert str(target) in msg and source.urls[0] in msg and str(torch_hub_inception_path(source)) in msg
    assert ("fid.download=false" if how == "config" else "CYCLEGAN_OFFLINE=1") in msg
    assert "fid.inception_weights=" in msg and "fid.enabled=false" in msg
    assert server.requests == [] and not target.parent.exists()


def test_a_failed_download_is_a_missing_weights_error(served):
    server, source = served
    server.files.clear()  # 404
    with pytest.raises(MissingWeightsError, match="HTTP 404.*FID/KID need the Inception-v3 weights"):
        resolve_inception_weights(source=source, timeout=10)
