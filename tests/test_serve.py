"""The HTTP service on a real local port: translations equal ``Translator``'s bit for bit (odd sizes, grayscale,
RGBA with its alpha, 16-bit, both directions, concurrent requests; batched ones within 1/255), every bad request
is a 4xx JSON error and leaves the service serving, and the routes the page and scripts rely on answer."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import write_images
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serving import running, two_way_translator  # noqa: E402

from cyclegan_lightning.data.images import to_pil  # noqa: E402
from cyclegan_lightning.serving import create_app  # noqa: E402


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    return two_way_translator(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def service(translator):
    with running(create_app(translator, max_upload_bytes=200_000, max_pixels=100 * 100)) as url:
        yield url


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Odd-sized RGB, grayscale, RGBA with a varied alpha, and 16-bit grayscale files."""
    folder = tmp_path_factory.mktemp("images")
    files = {
        "rgb": write_images(folder / "rgb", 1, size=(37, 29))[0],
        "gray": write_images(folder / "gray", 1, size=(20, 45), mode="L", seed=1)[0],
        "rgba": write_images(folder / "rgba", 1, size=(26, 18), mode="RGBA", seed=2)[0],
    }
    deep = np.random.default_rng(3).integers(0, 65536, (23, 31), dtype=np.uint16)
    files["16bit"] = folder / "deep.png"
    Image.fromarray(deep).save(files["16bit"])
    return files


def post(url: str, data: bytes, direction: str | None = "a2b", content_type: str = "image/png", name="x.png"):
    params = {"direction": direction} if direction else {}
    return httpx.post(f"{url}/translate", params=params, files={"image": (name, data, content_type)}, timeout=60)


def expected(translator, path: Path, direction: str) -> np.ndarray:
    return np.asarray(to_pil(translator.translate_file(path, direction)))


def test_outputs_equal_the_translators_bit_for_bit(service, translator, images):
    for kind, path in images.items():
        for direction in ("a2b", "b2a"):
            response = post(service, path.read_bytes(), direction)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
            out = Image.open(io.BytesIO(response.content))
            assert out.size == Image.open(path).size, kind
            np.testing.assert_array_equal(np.asarray(out), expected(translator, path, direction), err_msg=kind)
    rgba = Image.open(io.BytesIO(post(service, images["rgba"].read_bytes()).content))
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba)[..., 3], np.asarray(Image.open(images["rgba"]))[..., 3])


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's header."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_bad_requests_are_4xx_with_a_reason_and_the_service_goes_on(service, images):
    good = images["rgb"].read_bytes()
    big = io.BytesIO()
    Image.new("RGB", (120, 120)).save(big, format="PNG")  # 14,400 pixels: over this service's 10,000
    cases = {
        "truncated": (post(service, good[: len(good) // 2]), 400, "cannot decode"),
        "bomb": (post(service, _png_claiming(40_000, 40_000)), 413, "pixels"),
        "too many pixels": (post(service, big.getvalue()), 413, "max_pixels=10000"),
        "too many bytes": (post(service, b"\x89PNG" + bytes(300_000)), 413, "max_upload_bytes"),
        "not an image": (post(service, b"hello, world"), 415, "not an image"),
        "text part": (post(service, good, content_type="text/plain"), 415, "text/plain"),
        "no multipart": (httpx.post(f"{service}/translate", content=good), 415, "multipart/form-data"),
        "no image field": (httpx.post(f"{service}/translate", files={"file": ("x.png", good)}), 400, "'image'"),
        "direction": (post(service, good, direction="c2d"), 422, "this model has a2b, b2a"),
    }
    for name, (response, status, reason) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert reason in response.json()["error"], name
        assert httpx.get(f"{service}/health").json() == {"status": "ok"}
    assert post(service, good).status_code == 200  # still translating


def test_concurrent_requests_are_all_correct_batched_or_not(translator, images, tmp_path):
    write_images(tmp_path, 6, size=(40, 32), seed=7)  # same size: batchable
    files = sorted(tmp_path.glob("*.png")) + list(images.values())
    want = {(p, d): expected(translator, p, d) for p in files for d in ("a2b", "b2a")}
    for max_batch in (1, 4):
        app = create_app(translator, max_batch_size=max_batch)
        with running(app) as url, ThreadPoolExecutor(8) as pool:
            jobs = [(p, d) for p in files for d in ("a2b", "b2a")] * 2
            responses = list(pool.map(lambda job: post(url, job[0].read_bytes(), job[1]), jobs))
        for (path, direction), response in zip(jobs, responses):
            assert response.status_code == 200, response.text
            got = np.asarray(Image.open(io.BytesIO(response.content)), dtype=int)
            diff = np.abs(got - want[path, direction])
            # one at a time: bit for bit; in a batch, a convolution's summation order may move a rare pixel by 1/255
            assert diff.max() <= (0 if max_batch == 1 else 1) and diff.mean() < 0.01, (path.name, direction)
        batches = app.state.worker.batches
        assert sum(batches) == len(jobs) and max(batches) <= max_batch
        if max_batch > 1:
            assert max(batches) > 1, batches  # 8 clients, one worker: same-size requests queued and were batched


def test_page_health_and_info(service, translator):
    page = httpx.get(f"{service}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'fetch("/info")' in page.text and "/translate?direction=" in page.text
    info = httpx.get(f"{service}/info").json()
    assert info["directions"] == ["a2b", "b2a"] and info["channels"] == {"a": 3, "b": 3}
    assert info["device"] == "cpu" and info["backend"] == translator.backend
    assert info["architecture"]["arch"] == "resnet" and info["architecture"]["n_blocks"] == 1
    assert info["training"] is None  # a reference file records no training
    assert info["limits"]["max_pixels"] == 10_000


def test_info_reports_the_training_metrics_of_a_checkpoint(tiny_runs):
    from cyclegan_lightning.serving.app import training_metrics

    metrics = training_metrics(tiny_runs[1][0] / "checkpoints" / "last.ckpt")
    assert metrics["epoch"] == 0 and metrics["global_step"] > 0
    assert any(k.startswith("best val/") for k in metrics), metrics


def test_serve_without_a_checkpoint_is_one_line_and_exit_code_2():
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "serve.py")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "ckpt_path=" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
