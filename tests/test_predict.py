"""predict.py on disk: same relative names and sizes, alpha carried, never over an input, resumable, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF_DIR, ROOT, write_images
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from cyclegan_lightning.data.images import ImageLoadError
from cyclegan_lightning.errors import ConfigError, CycleGANError


def load_script(name: str):
    """Import a top-level script by path (its name could clash with an installed package, e.g. ``evaluate``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cyclegan_script_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predict = load_script("predict").predict


def predict_cfg(ckpt: Path, inputs, output_dir: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        inp = f"[{','.join(map(str, inputs))}]" if isinstance(inputs, list) else str(inputs)
        cfg = compose(
            "predict",
            overrides=[f"ckpt_path={ckpt}", f"input={inp}", f"output_dir={output_dir}", "progress=false", *overrides],
        )
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def ckpt(tiny_runs) -> Path:
    return tiny_runs[1][0] / "checkpoints" / "last.ckpt"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with odd sizes, a nested folder, grayscale and RGBA images."""
    src = tmp_path / "photos"
    write_images(src, 2, size=(37, 29))
    write_images(src / "nested", 1, size=(20, 45), mode="L", seed=1)
    write_images(src / "alpha", 1, size=(26, 18), mode="RGBA", seed=2)
    return src


def test_folder_translated_with_same_names_sizes_and_alpha(ckpt, photos, tmp_path):
    out = tmp_path / "out"
    summary = predict(predict_cfg(ckpt, photos, out, "round_trip=true", "grid=true"))
    assert summary.translated == 4 and summary.skipped == 0 and not summary.failed
    for src in photos.rglob("*.png"):
        rel = src.relative_to(photos)
        result = Image.open(out / rel)
        assert result.size == Image.open(src).size
        assert (out / "a2b_cycle" / rel).is_file() and (out / "a2b_grid" / rel).is_file()
    rgba_in, rgba_out = Image.open(photos / "alpha" / "img_000.png"), Image.open(out / "alpha" / "img_000.png")
    assert rgba_out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba_out)[..., 3], np.asarray(rgba_in)[..., 3])
    assert Image.open(out / "nested" / "img_000.png").mode == "RGB"  # grayscale input, RGB domain
    assert "nested/img_000.png" in (out / "index.html").read_text()
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
    assert "images/s" in summary.line()


def test_both_directions_and_resume_without_redoing(ckpt, photos, tmp_path):
    out = tmp_path / "out"
    cfg = predict_cfg(ckpt, photos, out, "direction=both")
    assert predict(cfg).translated == 4
    done = sorted(out.rglob("img_*.png"))
    assert len(done) == 8 and {p.relative_to(out).parts[0] for p in done} == {"a2b", "b2a"}
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    victim = out / "b2a" / "nested" / "img_000.png"
    victim.unlink()  # as if interrupted before this one
    summary = predict(cfg)
    assert summary.translated == 1 and summary.skipped == 3 and victim.is_file()
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if p != victim)
    assert predict(predict_cfg(ckpt, photos, out, "direction=both", "overwrite=true")).translated == 4


def test_never_writes_over_an_input(ckpt, photos, tmp_path):
    before = {p: p.read_bytes() for p in photos.rglob("*.png")}
    with pytest.raises(ConfigError, match="is the input folder"):
        predict(predict_cfg(ckpt, photos, photos))
    single = photos / "img_000.png"
    with pytest.raises(ConfigError, match="would overwrite the input"):
        predict(predict_cfg(ckpt, [single], photos))
    assert {p: p.read_bytes() for p in photos.rglob("*.png")} == before

    inside = photos / "translated"  # output inside the input folder: its files are not inputs on the next run
    assert predict(predict_cfg(ckpt, photos, inside)).translated == 4
    assert predict(predict_cfg(ckpt, photos, inside, "overwrite=true")).translated == 4


def test_bad_images_skipped_or_fatal(ckpt, tmp_path):
    src = tmp_path / "in"
    write_images(src, 1)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    summary = predict(predict_cfg(ckpt, src, tmp_path / "out"))
    assert summary.translated == 1 and summary.failed == [str(src / "broken.png")]
    with pytest.raises(ImageLoadError, match="broken.png"):
        predict(predict_cfg(ckpt, src, tmp_path / "out2", "on_bad_image=fail"))
    with pytest.raises(CycleGANError, match="no such file or folder"):
        predict(predict_cfg(ckpt, tmp_path / "nope", tmp_path / "out3"))


@pytest.mark.slow
def test_cli_exit_codes(ckpt, photos, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [
            sys.executable,
            str(ROOT / "predict.py"),
            f"ckpt_path={ckpt}",
            f"input={photos}",
            f"output_dir={tmp_path / 'o'}",
            "progress=false",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0 and "4 images translated" in ok.stdout
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "predict.py"),
            f"ckpt_path={photos / 'img_000.png'}",
            f"input={photos}",
            f"output_dir={tmp_path / 'o2'}",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "not a PyTorch file" in bad.stdout + bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def reference_translator(tmp_path):
    import torch

    from cyclegan_lightning.inference import build_translator
    from cyclegan_lightning.networks import ResnetGenerator

    torch.manual_seed(0)
    torch.save(ResnetGenerator(3, 3, ngf=8, n_blocks=1).state_dict(), tmp_path / "latest_net_G.pth")
    return lambda **kw: build_translator(tmp_path / "latest_net_G.pth", {"device": "cpu", "tile_size": None, **kw})


def test_parallel_images_run_concurrently_on_a_share_of_the_threads(reference_translator, tmp_path, monkeypatch):
    import threading
    import time

    import torch

    from cyclegan_lightning.inference.predict import run_prediction

    src = tmp_path / "in"
    write_images(src, 6, size=(40, 32))
    translator = reference_translator(backend="fastconv")
    real = translator.translate_loaded
    lock, seen = threading.Lock(), {"active": 0, "most": 0, "threads": set()}

    def watched(images, direction):
        with lock:
            seen["active"] += 1
            seen["most"] = max(seen["most"], seen["active"])
            seen["threads"].add(torch.get_num_threads())
        time.sleep(0.1)  # long enough for a second image to start if it may
        try:
            return real(images, direction)
        finally:
            with lock:
                seen["active"] -= 1

    monkeypatch.setattr(translator, "translate_loaded", watched)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outputs = {}
        for parallel in (1, 2):
            seen.update(active=0, most=0, threads=set())
            out = tmp_path / f"out{parallel}"
            assert run_prediction(translator, str(src), out, progress=False, parallel_images=parallel).translated == 6
            assert seen["most"] == parallel and seen["threads"] == {2 // parallel}
            assert torch.get_num_threads() == 2  # restored
            outputs[parallel] = [np.asarray(Image.open(p), dtype=int) for p in sorted(out.glob("*.png"))]
        assert len(outputs[2]) == 6
        for one, two in zip(outputs[1], outputs[2]):  # same images, whatever the thread split
            assert np.abs(one - two).max() <= 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="parallel_images=2 needs the CPU"):  # compile: one image at a time
        run_prediction(reference_translator(backend="compile"), str(src), tmp_path / "c", parallel_images=2)
    with pytest.raises(ConfigError, match="parallel_images must be"):
        run_prediction(translator, str(src), tmp_path / "c", parallel_images=0)


def test_auto_compiles_for_a_large_run_and_falls_back_if_compiling_fails(
    reference_translator, tmp_path, monkeypatch, caplog
):
    """``translator.backend=auto`` switches to compile when one image size has enough pixels ahead to repay the
    compilation; if inductor cannot compile (no C++ compiler), auto goes on with fastconv and an explicit
    ``backend=compile`` stops with a one-line error."""
    import logging

    import torch

    from cyclegan_lightning.inference import translator as translator_module
    from cyclegan_lightning.inference.predict import run_prediction

    src = tmp_path / "in"
    write_images(src, 3, size=(40, 32))
    small = reference_translator(backend="auto")
    run_prediction(small, str(src), tmp_path / "fast", progress=False)
    assert small.backend == "fastconv"  # 3 small images: compiling would never pay

    def no_compiler(module, **kwargs):
        def run(x):
            raise torch._dynamo.exc.BackendCompilerFailed(run, RuntimeError("no working C++ compiler"), None)

        return run

    monkeypatch.setattr(translator_module, "COMPILE_PAYS_OFF_PIXELS", 3 * 40 * 32)
    monkeypatch.setattr(torch, "compile", no_compiler)
    large = reference_translator(backend="auto")
    with caplog.at_level(logging.INFO):
        run_prediction(large, str(src), tmp_path / "auto", progress=False)
    assert large.backend == "compile"  # the run was large enough
    assert "translator.backend=auto: compile (3 images of 40x32" in caplog.text
    assert "translating with fastconv instead" in caplog.text
    for name in ("img_000.png", "img_002.png"):  # fell back to fastconv: the same images
        auto, fast = (np.asarray(Image.open(tmp_path / run / name)) for run in ("auto", "fast"))
        np.testing.assert_array_equal(auto, fast)
    with pytest.raises(ConfigError, match="backend=compile could not compile.*no working C\\+\\+ compiler.*fastconv"):
        run_prediction(reference_translator(backend="compile"), str(src), tmp_path / "explicit", progress=False)
