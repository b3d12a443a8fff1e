"""The web page in a real headless Chromium (Playwright driving the system's browser): load it, upload a file, wait
for the translation, check that the output has the input's size and differs from it, and keep a screenshot.

Skips, saying why, where Playwright or a Chromium binary is missing (CI installs Debian's ``chromium``: .ci/run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_images
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from serving import running, two_way_translator  # noqa: E402

from cyclegan_lightning.serving import create_app  # noqa: E402

# Chromium's own network features off: nothing may leave the machine, and the test must not wait on them
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    """The system's Chromium (``$CHROMIUM`` first); Playwright's own download is not used."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def screenshot_page(url: str, upload: Path, screenshot: Path, direction: str = "a2b") -> tuple[list[int], bytes]:
    """Open the page, choose ``direction`` and ``upload``, wait for the output; returns the output image's natural
    size and its bytes, and saves a screenshot of the page (also used for docs/images/serve_page.png)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 620})
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#direction option').length > 0")
            page.select_option("#direction", direction)
            page.set_input_files("#file", str(upload))
            page.wait_for_function(
                "document.getElementById('output').complete && document.getElementById('output').naturalWidth > 0",
                timeout=60_000,
            )
            size = page.evaluate(
                "[document.getElementById('output').naturalWidth, document.getElementById('output').naturalHeight]"
            )
            href = page.get_attribute("#download", "href")
            png = page.evaluate("async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer()))", href)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return size, bytes(png)


@pytest.mark.skipif(chromium() is None, reason="no Chromium binary found (apt-get install chromium, or set CHROMIUM)")
def test_page_translates_an_uploaded_image_in_a_real_browser(tmp_path):
    import io

    from cyclegan_lightning.data.images import to_pil

    translator = two_way_translator(tmp_path)
    app = create_app(translator)
    upload = write_images(tmp_path / "in", 1, size=(75, 50))[0]
    with running(app) as url:
        size, png = screenshot_page(url, upload, tmp_path / "page.png", direction="b2a")
    assert size == [75, 50]
    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    assert np.abs(out - np.asarray(Image.open(upload), dtype=int)).mean() > 5  # translated, not the input echoed
    np.testing.assert_array_equal(out, np.asarray(to_pil(translator.translate_file(upload, "b2a"))))  # the chosen way
    assert app.state.worker.batches == [1]  # one request went through the model
    assert Image.open(tmp_path / "page.png").size[0] == 1000
