"""An uploaded image, checked before it costs anything: bytes counted while they arrive, the pixel count read from
the header before decoding, then decoded by the project's one loader (``data.images.load_image``: EXIF, grayscale,
16-bit, alpha kept, only our formats), exactly as ``predict.py`` reads a file.

Each refusal is an ``UploadError`` with the HTTP status a client can act on: 413 too large (bytes or pixels,
decompression bombs included), 415 not an image (wrong content type, unknown format), 400 malformed (truncated or
corrupt file, no ``image`` field).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from cyclegan_lightning.data.images import PIL_FORMATS, ImageLoadError, LoadedImage, load_image

FIELD = "image"  # the multipart field holding the file


class UploadError(Exception):
    """A request the service refuses: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def _limited(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The request body, refused with 413 as soon as it exceeds ``max_bytes`` (whatever Content-Length said)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            raise UploadError(413, f"upload larger than max_upload_bytes={max_bytes}")
        yield chunk


async def receive_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of the ``image`` field of a multipart/form-data request."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(415, f"send the image as multipart/form-data, field '{FIELD}' (got {content_type or 'none'})")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, f"upload of {declared} bytes is larger than max_upload_bytes={max_bytes}")
    try:
        form = await MultiPartParser(request.headers, _limited(request, max_bytes), max_files=1, max_fields=4).parse()
    except MultiPartException as exc:
        raise UploadError(400, f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise UploadError(400, f"no file in the multipart field '{FIELD}'")
        part_type = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if not (part_type.startswith("image/") or part_type == "application/octet-stream"):
            raise UploadError(415, f"'{FIELD}' is {part_type}, not an image (PNG, JPEG, WebP, ...)")
        return await upload.read()
    finally:
        await form.close()


def header_pixels(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header, without decoding; 415 if it is not one of our formats, 413 over
    ``max_pixels`` (or a size Pillow itself calls a decompression bomb)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
                width, height = img.size
    except UnidentifiedImageError:
        raise UploadError(415, f"not an image of a format the service reads ({', '.join(PIL_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(413, f"too many pixels: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- a hostile header makes decoders raise many types
        raise UploadError(400, f"unreadable image header ({type(exc).__name__}: {exc})") from None
    if width * height > max_pixels:
        raise UploadError(413, f"image of {width}x{height} pixels is over max_pixels={max_pixels}")
    return width, height


def decode_upload(data: bytes, channels: int, max_pixels: int) -> LoadedImage:
    """The upload as ``load_image`` reads a file (blocking: run it in a thread). 400 if the file is truncated or
    corrupt."""
    header_pixels(data, max_pixels)
    with tempfile.TemporaryDirectory(prefix="cyclegan-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            return load_image(path, channels)
        except ImageLoadError as exc:
            raise UploadError(400, f"cannot decode the image: {exc.reason}") from None
