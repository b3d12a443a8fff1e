"""The one download path (``cyclegan_lightning.downloads``) against a local HTTP server, never the network: verified,
atomic, mirrors in order, bounded by a timeout, loud about unverified files, silent when offline; archives are
unpacked safely and atomically; the shipped registry lists what the reference publishes."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import pytest
from local_http import local_server, silent_server

from cyclegan_lightning.downloads import (
    Artefact,
    DownloadError,
    UnknownArtefactError,
    UnsafeArchiveError,
    fetch,
    load_registry,
    unpack_zip,
)
from cyclegan_lightning.errors import DataError

BODY = b"weights " * 1000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stand_in(urls: list[str], body: bytes | None = BODY, kind: str = "pretrained") -> Artefact:
    """An artefact named after the file the server holds; ``body=None``: no SHA-256 recorded (unverified)."""
    return Artefact("stand_in", kind, tuple(urls), "8 kB", sha256(body) if body is not None else None, "test")


@pytest.fixture
def server():
    with local_server() as s:
        s.files["/w.pth"] = BODY
        yield s


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache; downloads allowed (the suite's conftest switches them off for everyone else)."""
    monkeypatch.setenv("CYCLEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("CYCLEGAN_MIRROR", raising=False)
    return tmp_path / "cache"


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (temporary ones included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_good_file_is_verified_and_lands_once_in_the_cache(server, cache, caplog):
    art = stand_in([f"{server.url}/w.pth"])
    with caplog.at_level(logging.INFO):
        path = fetch(art, progress=False)
    assert path == cache / "pretrained" / "w.pth" and path.read_bytes() == BODY
    assert files_in(cache) == ["pretrained/w.pth"]  # no temporary file left beside it
    assert "verified" in caplog.text and str(path) in caplog.text and "UNVERIFIED" not in caplog.text

    assert fetch(art, progress=False) == path and server.requests == ["/w.pth"]  # cached: never fetched again

    path.write_bytes(b"altered")  # a cached file that no longer matches its SHA-256 is replaced
    assert fetch(art, progress=False).read_bytes() == BODY and server.requests == ["/w.pth"] * 2


@pytest.mark.parametrize(
    ("how", "expected"),
    [("truncated", "truncated"), ("wrong hash", "checksum mismatch, the file was deleted"), ("404", "HTTP 404")],
)
def test_a_bad_download_leaves_nothing_and_says_why(server, cache, how, expected):
    server.truncated["/cut.pth"] = BODY
    server.files["/other.pth"] = b"other bytes"
    url = {"truncated": "/cut.pth", "wrong hash": "/other.pth", "404": "/missing.pth"}[how]
    with pytest.raises(DownloadError, match=expected) as info:
        fetch(stand_in([server.url + url]), progress=False)
    assert "nothing was written" in str(info.value) and "download" in str(info.value)
    assert files_in(cache) == []  # neither the file nor a temporary one


def test_mirrors_are_tried_in_order_until_one_serves_the_right_file(server, cache):
    server.files["/bad.pth"] = b"tampered"
    urls = [f"{server.url}/gone.pth", f"{server.url}/bad.pth", f"{server.url}/w.pth"]
    assert fetch(stand_in(urls), progress=False).read_bytes() == BODY
    assert server.requests == ["/gone.pth", "/bad.pth", "/w.pth"]


def test_when_every_mirror_fails_one_error_names_each(server, cache):
    urls = [f"{server.url}/gone.pth", f"{server.url}/also-gone.pth"]
    with pytest.raises(DownloadError) as info:
        fetch(stand_in(urls), progress=False)
    msg = str(info.value)
    assert "every mirror failed" in msg and all(f"{u}: HTTP 404" in msg for u in urls) and "\n" not in msg


def test_cyclegan_mirror_is_tried_first(server, cache, monkeypatch):
    server.files["/pretrained/w.pth"] = BODY
    monkeypatch.setenv("CYCLEGAN_MIRROR", f"{server.url}/")
    fetch(stand_in([f"{server.url}/w.pth"]), progress=False)
    assert server.requests == ["/pretrained/w.pth"]


@pytest.mark.timeout(60)
def test_a_silent_server_times_out_instead_of_hanging(cache):
    with silent_server() as url, pytest.raises(DownloadError, match="timed out"):
        fetch(stand_in([f"{url}/w.pth"]), timeout=0.5, progress=False)
    assert files_in(cache) == []


def test_an_unverified_file_is_announced_loudly_with_its_digest(server, cache, caplog):
    with caplog.at_level(logging.WARNING):
        path = fetch(stand_in([f"{server.url}/w.pth"], body=None), progress=False)
    assert path.read_bytes() == BODY
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "UNVERIFIED" in warning.getMessage() and "pretrained stand_in" in warning.getMessage()
    assert sha256(BODY) in warning.getMessage()  # what a user records in the registry


def test_offline_makes_no_request_and_says_which_file_goes_where(server, cache, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1")
    art = stand_in([f"{server.url}/w.pth"])
    with pytest.raises(DownloadError) as info:
        fetch(art, progress=False)
    msg, target = str(info.value), cache / "pretrained" / "w.pth"
    assert "CYCLEGAN_OFFLINE=1" in msg and str(target) in msg and art.urls[0] in msg
    assert server.requests == [] and files_in(cache) == []

    target.parent.mkdir(parents=True)
    target.write_bytes(BODY)  # put there by hand: used, still without a request
    assert fetch(art, progress=False) == target and server.requests == []


# ---- archives ---------------------------------------------------------------------------------------------------
def zip_bytes(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # S_IFLNK, as `zip --symlinks` records a link
            z.writestr(info, target)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        ({"set/../../evil.txt": b"x"}, ".. in its path"),
        ({"/tmp/evil.txt": b"x"}, "absolute path"),
        ({"set\\..\\..\\evil.txt": b"x"}, ".. in its path"),
        ("symlink", "symbolic link"),
    ],
)
def test_a_hostile_archive_is_refused_whole(tmp_path, hostile, reason):
    members = {"set/trainA/a.png": b"png"}
    links = {"set/trainB": "/etc"} if hostile == "symlink" else None
    archive = tmp_path / "dl" / "set.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes(members | (hostile if isinstance(hostile, dict) else {}), links))
    data = tmp_path / "area" / "data"
    with pytest.raises(UnsafeArchiveError, match=reason):
        unpack_zip(archive, data / "set")
    assert not (tmp_path / "area").exists() and files_in(tmp_path) == ["dl/set.zip"]  # nothing written, anywhere


def test_unpacking_is_atomic_and_checks_the_layout(tmp_path):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes({"set/trainA/a.png": b"a", "set/testA/b.png": b"b"}))
    with pytest.raises(DataError, match=r"has no trainB/ \(found: testA, trainA\)"):
        unpack_zip(archive, tmp_path / "data" / "set", ("trainA", "trainB", "testA"))
    assert list((tmp_path / "data").iterdir()) == []  # not even the staging folder

    archive.write_bytes(zip_bytes({"set/trainA/a.png": b"a"})[:-30])  # cut: its directory is gone
    with pytest.raises(DataError, match="not a readable zip"):
        unpack_zip(archive, tmp_path / "data" / "set")
    assert list((tmp_path / "data").iterdir()) == []


# ---- the registry -----------------------------------------------------------------------------------------------
# The names of the reference's datasets/download_cyclegan_dataset.sh and scripts/download_cyclegan_model.sh.
REFERENCE_DATASETS = (
    "ae_photos apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo vangogh2photo "
    "maps cityscapes facades iphone2dslr_flower mini mini_pix2pix mini_colorization"
).split()
REFERENCE_MODELS = (
    "apple2orange orange2apple summer2winter_yosemite winter2summer_yosemite horse2zebra zebra2horse monet2photo "
    "style_monet style_cezanne style_ukiyoe style_vangogh sat2map map2sat cityscapes_photo2label "
    "cityscapes_label2photo facades_photo2label facades_label2photo iphone2dslr_flower"
).split()


def test_the_registry_covers_the_references_scripts():
    registry = load_registry()
    assert set(registry.names("dataset")) | set(registry.excluded) == set(REFERENCE_DATASETS)
    assert "cityscapes" in registry.excluded and "licence" in registry.excluded["cityscapes"]
    assert set(registry.names("pretrained")) == set(REFERENCE_MODELS)
    for kind in ("dataset", "pretrained"):
        for art in registry.artefacts[kind].values():
            assert art.urls[0].startswith("https://") and art.licence and art.size
            assert art.filename == f"{art.name}.{'zip' if kind == 'dataset' else 'pth'}"
    horse2zebra = registry.get("dataset", "horse2zebra")
    assert horse2zebra.layout == ("trainA", "trainB", "testA", "testB")


def test_unknown_or_excluded_names_say_what_exists():
    registry = load_registry()
    with pytest.raises(UnknownArtefactError, match="known: .*horse2zebra.*style_monet"):
        registry.get("pretrained", "horse2donkey")
    with pytest.raises(UnknownArtefactError, match="cityscapes-dataset.com"):
        registry.get("dataset", "cityscapes")
