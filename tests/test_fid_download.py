"""The Inception weights download, against a local HTTP server (never the network): verified, atomic, announced,
refused when offline, and bounded by a timeout."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import socket
import threading
from pathlib import Path

import pytest
import torch

from cyclegan_lightning.evaluation import INCEPTION, MissingWeightsError, WeightsFile, download_weights
from cyclegan_lightning.evaluation.metrics import resolve_inception_weights


def stand_in_bytes() -> bytes:
    """A small state_dict shaped like the real file where we check it (an ``fc.weight`` tensor)."""
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2, 2)}, buf)
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        if self.path == "/truncated":  # promises the whole file, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body[: len(self.body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.body = stand_in_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def source(url: str, body: bytes | None = None) -> WeightsFile:
    digest = hashlib.sha256(body if body is not None else stand_in_bytes()).hexdigest()
    return WeightsFile("weights-test.pth", url, digest, "1 kB")


def test_the_pinned_file_is_torch_fidelitys_with_its_hash_prefix():
    assert INCEPTION.url.startswith("https://github.com/toshas/torch-fidelity/releases/download/")
    assert INCEPTION.url.endswith("/" + INCEPTION.name)
    prefix = INCEPTION.name.rsplit("-", 1)[1].split(".")[0]  # torch.hub names carry the sha256's first 8 digits
    assert len(INCEPTION.sha256) == 64 and INCEPTION.sha256.startswith(prefix)


def test_download_into_the_hub_cache_is_verified_and_announced(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    src = source(f"{server}/weights-test.pth")
    with caplog.at_level(logging.INFO):
        path = resolve_inception_weights(source=src)
    assert path == tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-test.pth"
    assert path.read_bytes() == stand_in_bytes() and list(path.parent.iterdir()) == [path]
    said = caplog.text
    assert src.url in said and str(path) in said and "fid.download=false" in said

    path.write_bytes(b"changed")  # present: used as is, never fetched again (and here found unreadable)
    with pytest.raises(MissingWeightsError, match="cannot be read"):
        resolve_inception_weights(source=src)


@pytest.mark.parametrize(
    ("route", "body", "expected"),
    [
        ("/truncated", None, "truncated"),
        ("/weights-test.pth", b"other bytes", "checksum mismatch"),
        ("/missing", None, "download failed"),
    ],
)
def test_a_bad_download_leaves_nothing_behind(server, tmp_path, route, body, expected):
    dest = tmp_path / "cache" / "weights-test.pth"
    with pytest.raises(MissingWeightsError, match=expected) as info:
        download_weights(source(server + route, body), dest, timeout=10)
    assert f"nothing was written to {dest}" in str(info.value)
    assert empty(dest.parent)  # neither the file nor a temporary one


@pytest.mark.timeout(60)
def test_a_silent_server_times_out_instead_of_hanging(tmp_path):
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/weights-test.pth"
        with pytest.raises(MissingWeightsError, match="timed out"):
            download_weights(source(url), tmp_path / "w.pth", timeout=0.5)
    assert empty(tmp_path)


@pytest.mark.parametrize("how", ["config", "env"])
def test_offline_says_which_file_goes_where(server, tmp_path, monkeypatch, how):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1" if how == "env" else "0")
    src = source(f"{server}/weights-test.pth")
    with pytest.raises(MissingWeightsError) as info:
        resolve_inception_weights(download=how != "config", source=src)
    msg = str(info.value)
    target = tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-test.pth"
    assert (
        str(target) in msg
        and src.url in msg
        and ("fid.download=false" if how == "config" else "CYCLEGAN_OFFLINE=1") in msg
    )
    assert empty(target.parent)
