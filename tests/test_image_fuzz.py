"""Hostile and odd image files through ``load_image`` and the datasets: each ends in a correct tensor or an
``ImageLoadError`` naming the file; never another exception, a hang or an unbounded allocation.

Property tests (hypothesis) cover random bytes, every accepted format truncated anywhere, byte flips and valid
images of every mode; the named tests below pin each kind of input in docs/robustness.md to its outcome.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cyclegan_lightning.data import images as images_mod
from cyclegan_lightning.data.datasets import SingleDomainDataset, UnpairedImageDataset
from cyclegan_lightning.data.images import IMG_EXTENSIONS, ImageLoadError, image_size, load_image
from cyclegan_lightning.data.transforms import MAX_RESIZED_PIXELS, PREPROCESS_MODES, build_transform

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EXT = {"JPEG": ".jpg", "PNG": ".png", "PPM": ".ppm", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif"}


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _pattern(size=(12, 9), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def _seed_files() -> dict[str, bytes]:
    """One small valid file per accepted format (and some variants): the corpus that truncation/flips start from."""
    rgb = _pattern()
    seeds = {
        "jpg": encode(rgb, "JPEG"),
        "jpg-progressive": encode(rgb, "JPEG", progressive=True),
        "png": encode(rgb, "PNG"),
        "png-16bit": encode(Image.fromarray(np.arange(108, dtype=np.uint16).reshape(9, 12) * 600), "PNG"),
        "ppm": encode(rgb, "PPM"),
        "bmp": encode(rgb, "BMP"),
        "tif": encode(rgb, "TIFF"),
        "tif-deflate": encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tif-float": encode(Image.fromarray(np.linspace(0, 1, 108, dtype=np.float32).reshape(9, 12)), "TIFF"),
        "tif-cmyk": encode(rgb.convert("CMYK"), "TIFF"),
        "webp": encode(rgb, "WEBP", quality=80),
        "webp-lossless": encode(rgb, "WEBP", lossless=True),
        "gif": encode(rgb.convert("P"), "GIF"),
        "gif-animated": encode(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.rotate(90).convert("P")]),
    }
    return seeds


SEEDS = _seed_files()
SEED_EXT = {k: "." + k.split("-")[0] for k in SEEDS}


def check_contract(path: Path, channels: int = 3):
    """The contract: a finite (C, H, W) tensor in [0, 1], or ImageLoadError naming the file. Returns either."""
    try:
        out = load_image(path, channels)
    except ImageLoadError as exc:
        assert exc.path == str(path) and str(path) in str(exc)
        return exc
    img = out.image
    assert img.dtype == torch.float32 and img.ndim == 3 and img.shape[0] == channels
    assert img.shape[1] >= 1 and img.shape[2] >= 1
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    if out.alpha is not None:
        assert out.alpha.shape == (1, *img.shape[1:])
    return out


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- property tests ---------------------------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=2048), ext=st.sampled_from(IMG_EXTENSIONS), channels=st.sampled_from([1, 3]))
def test_random_bytes(tmp_path, data, ext, channels):
    check_contract(write(tmp_path, f"random{ext}", data), channels)


@FUZZ
@given(
    data=st.binary(max_size=512),
    magic=st.sampled_from(
        [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"P6\n", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"GIF89a"]
    ),
)
def test_random_bytes_after_a_valid_magic_number(tmp_path, data, magic):
    check_contract(write(tmp_path, "magic.png", magic + data))


@settings(FUZZ, max_examples=120)
@given(kind=st.sampled_from(sorted(SEEDS)), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_files_of_every_format(tmp_path, kind, cut):
    data = SEEDS[kind]
    path = write(tmp_path, f"cut{SEED_EXT[kind]}", data[: int(len(data) * cut)])
    out = check_contract(path)
    if cut < 0.5 and not kind.startswith("tif"):  # half the file cannot hold the whole image (TIFF: data first)
        assert isinstance(out, ImageLoadError)


@settings(FUZZ, max_examples=120)
@given(
    kind=st.sampled_from(sorted(SEEDS)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_byte_flips_of_every_format(tmp_path, kind, flips):
    data = bytearray(SEEDS[kind])
    for where, value in flips:
        data[int(where * len(data))] = value
    check_contract(write(tmp_path, f"flip{SEED_EXT[kind]}", bytes(data)))


LOSSLESS = ("PNG", "PPM", "BMP", "TIFF", "WEBP")


@FUZZ
@given(w=st.integers(1, 40), h=st.integers(1, 40), fmt=st.sampled_from(LOSSLESS), seed=st.integers(0, 2**16))
def test_valid_rgb_images_round_trip_exactly(tmp_path, w, h, fmt, seed):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    kwargs = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    path = write(tmp_path, f"ok{EXT[fmt]}", encode(Image.fromarray(arr), fmt, **kwargs))
    out = load_image(path)
    assert out.alpha is None
    torch.testing.assert_close(out.image, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert image_size(path) == (w, h)


@FUZZ
@given(
    w=st.integers(1, 24),
    h=st.integers(1, 24),
    fmt=st.sampled_from(sorted(EXT)),
    mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]),
    channels=st.sampled_from([1, 3]),
)
def test_valid_images_of_any_mode_give_the_right_shape(tmp_path, w, h, fmt, mode, channels):
    img = _pattern((w, h), "RGB").convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(np.asarray(img).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]) * 3)
    try:
        data = encode(img, fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode
        return
    out = check_contract(write(tmp_path, f"mode{EXT[fmt]}", data), channels)
    assert not isinstance(out, ImageLoadError), out
    assert out.image.shape == (channels, h, w)


@FUZZ
@given(
    kinds=st.lists(st.sampled_from(["good", "empty", "garbage", "truncated"]), min_size=1, max_size=8),
    index=st.integers(0, 50),
)
def test_dataset_skip_policy_returns_a_good_image_or_names_the_file(tmp_path, kinds, index):
    files = []
    for i, kind in enumerate(kinds):
        data = {"good": SEEDS["png"], "empty": b"", "garbage": b"not an image", "truncated": SEEDS["png"][:60]}[kind]
        files.append(write(tmp_path, f"{i}_{kind}.png", data))
    ds = SingleDomainDataset(files, build_transform("resize_and_crop", 36, 32, train=True), on_bad_image="skip")
    if "good" not in kinds:
        with pytest.raises(ImageLoadError, match="could not be read"):
            ds[index % len(ds)]
        return
    sample = ds[index % len(ds)]
    assert sample["image"].shape == (3, 32, 32) and "good" in sample["path"]
    strict = SingleDomainDataset(files, build_transform("resize_and_crop", 36, 32), on_bad_image="fail")
    for i, f in enumerate(files):
        if "good" in f.name:
            assert strict[i]["path"] == str(f)
        else:
            with pytest.raises(ImageLoadError, match=f.name):
                strict[i]


# ---- named kinds of input: each pinned to its documented outcome ---------------------------------------------------
def test_zero_byte_file(tmp_path):
    path = write(tmp_path, "empty.jpg", b"")
    with pytest.raises(ImageLoadError, match=r"empty.jpg.*empty \(0 bytes\)"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="empty"):
        image_size(path)


def test_missing_file_and_folder_named_like_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "gone.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageLoadError, match="dir.png"):
        load_image(tmp_path / "dir.png")


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but holds a few bytes of data: a decompression bomb's header."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("w,h", [(100_000, 100_000), (20_000, 20_000), (16384, 16385), (2**31 - 1, 2**31 - 1)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, w, h):
    path = write(tmp_path, "bomb.png", _png_header_only(w, h))
    start = time.perf_counter()
    for fn in (load_image, image_size):
        with pytest.raises(ImageLoadError, match=r"bomb.png.*too many pixels.*MAX_IMAGE_PIXELS"):
            fn(path)
    assert time.perf_counter() - start < 2  # refused from the header, nothing allocated


def test_pixel_limit_is_the_documented_setting(tmp_path, monkeypatch):
    path = write(tmp_path, "small.png", encode(_pattern((40, 40)), "PNG"))
    assert load_image(path).image.shape == (3, 40, 40)
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 40 * 40 - 1)
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="too many pixels"):
        image_size(path)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP", "WEBP", "JPEG"])
def test_bomb_limit_holds_for_every_format(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 100)  # 11x10 = 110 pixels: over the limit
    path = write(tmp_path, f"big{EXT[fmt]}", encode(_pattern((11, 10)), fmt))
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(path)


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (1, 1)])
@pytest.mark.parametrize("preprocess", PREPROCESS_MODES)
def test_extreme_aspect_ratios_and_single_pixels(tmp_path, size, preprocess):
    path = write(tmp_path, "odd.png", encode(_pattern(size), "PNG"))
    out = load_image(path)
    assert out.image.shape == (3, size[1], size[0])
    ds = SingleDomainDataset([path], build_transform(preprocess, 286, 256, train=True), on_bad_image="fail")
    try:
        image = ds[0]["image"]
    except ImageLoadError as exc:  # resizing it keeping its aspect would need gigabytes: refused, named
        assert "odd.png" in str(exc) and "too large" in str(exc) and size != (1, 1)
        assert preprocess in ("scale_width", "scale_width_and_crop", "crop")
        return
    assert image.ndim == 3 and image.numel() <= 3 * MAX_RESIZED_PIXELS and torch.isfinite(image).all()
    if preprocess != "none":
        assert min(image.shape[1:]) >= 256


def test_sixteen_bit_keeps_its_precision(tmp_path):
    arr = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 7
    for fmt in ("PNG", "TIFF"):
        path = write(tmp_path, f"deep{EXT[fmt]}", encode(Image.fromarray(arr), fmt))
        out = load_image(path, channels=1).image
        # exact to 1/65535: 8-bit squashing would be off by up to 1/510
        torch.testing.assert_close(out[0], torch.from_numpy(arr.astype(np.float32) / 65535), atol=1e-6, rtol=0)


def test_float_tiff_in_range_kept_out_of_range_stretched_nan_refused(tmp_path):
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out = load_image(write(tmp_path, "unit.tif", encode(Image.fromarray(unit), "TIFF")), 1).image
    torch.testing.assert_close(out[0], torch.from_numpy(unit))
    wide = unit * 1000 - 200
    out = load_image(write(tmp_path, "wide.tif", encode(Image.fromarray(wide), "TIFF")), 1).image
    torch.testing.assert_close(out[0], torch.from_numpy(unit), atol=1e-5, rtol=0)
    bad = unit.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ImageLoadError, match="nan.tif.*NaN"):
        load_image(write(tmp_path, "nan.tif", encode(Image.fromarray(bad), "TIFF")))
    bad[3, 3] = np.inf
    with pytest.raises(ImageLoadError, match="inf.tif.*NaN or Inf"):
        load_image(write(tmp_path, "inf.tif", encode(Image.fromarray(bad), "TIFF")))


@pytest.mark.parametrize("fmt,atol", [("TIFF", 0.0), ("JPEG", 0.05)])
def test_cmyk_is_converted_to_rgb(tmp_path, fmt, atol):
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    out = load_image(write(tmp_path, f"cmyk{EXT[fmt]}", encode(cyan, fmt))).image
    torch.testing.assert_close(out[:, 4, 4], torch.tensor([0.0, 1.0, 1.0]), atol=atol, rtol=0)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_is_composited_on_white_and_alpha_returned(tmp_path, fmt):
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 1)  # index 1 (blue) is transparent
    out = load_image(write(tmp_path, f"pal{EXT[fmt]}", encode(img, fmt, transparency=1)))
    assert out.alpha is not None and out.alpha[0, 0, 0] == 0 and out.alpha[0, 1, 1] == 1
    torch.testing.assert_close(out.image[:, 0, 0], torch.ones(3))  # transparent -> white
    torch.testing.assert_close(out.image[:, 1, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_colour_key_transparency_of_rgb_and_grey_png(tmp_path):
    for mode, key in (("RGB", (1, 2, 3)), ("L", 7)):
        img = Image.new(mode, (3, 3), key)
        img.putpixel((1, 1), 200 if mode == "L" else (200, 0, 0))
        out = load_image(write(tmp_path, f"key{mode}.png", encode(img, "PNG", transparency=key)))
        assert out.alpha is not None and out.alpha[0, 0, 0] == 0 and out.alpha[0, 1, 1] == 1
        assert (out.image[:, 0, 0] == 1).all()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_exif_rotation_is_applied(tmp_path, fmt):
    arr = np.zeros((10, 20, 3), dtype=np.uint8)  # landscape 20 wide x 10 high; top row white
    arr[0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = write(tmp_path, f"rot{EXT[fmt]}", encode(Image.fromarray(arr), fmt, exif=exif.tobytes()))
    out = load_image(path).image
    assert out.shape == (3, 20, 10)  # upright portrait
    assert image_size(path) == (10, 20)
    assert out[:, :, -1].mean() > 0.8 and out[:, :, 0].mean() < 0.2  # top row became the right column


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    path = write(tmp_path, f"anim{EXT[fmt]}", encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs))
    out = load_image(path).image
    torch.testing.assert_close(out[:, 4, 4], torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)


@pytest.mark.parametrize("fmt", ["PCX", "TGA", "ICO", "PSD-like"])
def test_other_pillow_formats_behind_an_image_extension_are_refused(tmp_path, fmt):
    """Only our formats' decoders run: a .png holding TGA, PCX, ICO, EPS... is refused, never decoded."""
    if fmt == "PSD-like":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"  # EPS would start Ghostscript
    else:
        data = encode(_pattern((8, 8)), fmt)
    path = write(tmp_path, "disguised.png", data)
    with pytest.raises(ImageLoadError, match="disguised.png.*not an image file of a format we read"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="disguised.png"):
        image_size(path)


def test_mpo_jpeg_from_a_camera_still_loads(tmp_path):
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    path = write(tmp_path, "camera.jpg", encode(frames[0], "MPO", save_all=True, append_images=frames[1:]))
    out = load_image(path).image
    assert out.shape == (3, 8, 8) and out[0, 4, 4] > 0.9


def test_decoder_errors_of_any_type_name_the_file(tmp_path, monkeypatch):
    """Pillow raises struct.error, IndexError, ... on some hostile files: all become ImageLoadError."""
    path = write(tmp_path, "x.png", SEEDS["png"])
    for exc in (struct.error("unpack requires a buffer"), IndexError("list index"), MemoryError(), KeyError(3)):

        def boom(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr(Image.Image, "load", boom)
        with pytest.raises(ImageLoadError, match="x.png"):
            load_image(path)
        monkeypatch.undo()


def test_bad_files_never_kill_a_dataloader_worker(tmp_path):
    good = [write(tmp_path, f"good{i}.png", SEEDS["png"]) for i in range(3)]
    bad = [
        write(tmp_path, name, data)
        for name, data in (
            ("trunc.jpg", SEEDS["jpg"][:100]),
            ("empty.png", b""),
            ("junk.gif", b"GIF89a" + b"\xff" * 50),
        )
    ]
    transform = build_transform("resize_and_crop", 36, 32)
    ds = UnpairedImageDataset(good + bad, good, transform, transform, on_bad_image="skip")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert sum(b["a"].shape[0] for b in batches) == 6
    assert sum(int(b["skipped"].sum()) for b in batches) >= 3  # each bad file skipped and counted


@pytest.mark.slow
def test_atheris_fuzz_target_runs_clean_for_a_bounded_time(tmp_path):
    """The fuzz target (optional extra ``fuzz``) for 20 s from the seed corpus: no crash, hang or memory blow-up."""
    pytest.importorskip("atheris")
    import subprocess
    import sys

    target = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_load_image.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(target),
            "-max_total_time=20",
            "-rss_limit_mb=2048",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=400,  # 20 s of fuzzing; startup is slow on a loaded machine
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr and len(list((tmp_path / "corpus").iterdir())) >= 13
