"""The HTTP service: a Starlette app around one ``Translator`` (``serve.py`` runs it with uvicorn).

Why Starlette + uvicorn: four routes need no more than Starlette (FastAPI is Starlette plus request-model validation
and OpenAPI, which a multipart upload and a PNG back do not use), both are widely used and actively maintained
(encode/starlette, encode/uvicorn), and the app is a plain ASGI object that tests start in-process or in a thread.
LitServe was the other candidate: its batching is a fixed time window and it runs the model in worker processes,
one more copy of the weights each; here one worker thread batches whatever queued up (``worker.py``).

Routes: ``GET /`` the page (``static/index.html``), ``GET /health``, ``GET /info`` (model, device, backend,
training metrics), ``POST /translate?direction=a2b`` with the image in the multipart field ``image``: a PNG of the
same size back (alpha kept), equal bit for bit to ``Translator`` on the same file. Refusals are JSON
``{"error": ...}`` with a 4xx status (``uploads.py``); a failed request leaves the service serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cyclegan_lightning.checkpoints.loading import safe_load
from cyclegan_lightning.data.images import LoadedImage, to_pil
from cyclegan_lightning.errors import CheckpointError
from cyclegan_lightning.inference.translator import Translator
from cyclegan_lightning.serving.uploads import UploadError, decode_upload, receive_upload
from cyclegan_lightning.serving.worker import TranslationWorker

log = logging.getLogger(__name__)


def training_metrics(path: Path) -> dict | None:
    """Epoch, step and the best monitored score a train.py ``.ckpt`` recorded; None for files without them."""
    if path.suffix != ".ckpt":
        return None
    try:
        ckpt = safe_load(path, mmap=True)  # memory-mapped: reading the small entries does not load the weights
    except CheckpointError:
        return None
    metrics = {k: ckpt[k] for k in ("epoch", "global_step") if isinstance(ckpt.get(k), int)}
    for name, state in (ckpt.get("callbacks") or {}).items():
        if name.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            metrics[f"best {state.get('monitor')}"] = round(float(state["best_model_score"]), 6)
    return metrics or None


def model_info(translator: Translator) -> dict:
    loaded = translator.loaded
    return {
        "checkpoint": loaded.path.name,
        "source": loaded.source,
        "architecture": {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in loaded.info.items()},
        "directions": list(translator.directions),
        "channels": dict(loaded.channels),
        "device": str(translator.device),
        "backend": translator.backend,
        "precision": "32" if translator.dtype is None else str(translator.dtype).removeprefix("torch."),
        "training": training_metrics(loaded.path),
    }


def _png(image: LoadedImage) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def create_app(
    translator: Translator,
    max_upload_bytes: int = 25 * 1024 * 1024,  # larger uploads get 413 (counted while they arrive)
    max_pixels: int = 4096 * 4096,  # larger images get 413 (read from the header, before decoding)
    max_batch_size: int | str = "auto",  # same-size concurrent requests per forward; auto: 1 on a CPU, 8 on a GPU
) -> Starlette:
    """The service around ``translator``; its generators are prepared before the first request."""
    if max_batch_size == "auto":  # on a CPU a batch is no faster per image than one at a time (docs/serving.md)
        max_batch_size = 1 if translator.device.type == "cpu" else 8
    translator.prepare(list(translator.directions))
    worker = TranslationWorker(translator, int(max_batch_size))
    info = model_info(translator)
    info["limits"] = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_batch_size": max_batch_size}
    page = (resources.files("cyclegan_lightning.serving") / "static" / "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def get_info(request: Request) -> Response:
        return JSONResponse(info)

    async def translate(request: Request) -> Response:
        direction = request.query_params.get("direction", translator.directions[0])
        try:
            if direction not in translator.directions:
                have = ", ".join(translator.directions)
                raise UploadError(422, f"unknown direction {direction!r}: this model has {have}")
            data = await receive_upload(request, max_upload_bytes)
            loaded = await run_in_threadpool(decode_upload, data, translator.channels_in(direction), max_pixels)
        except UploadError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        try:
            result = await asyncio.wrap_future(worker.submit(loaded, direction))
        except Exception as exc:  # noqa: BLE001 -- logged by the worker; the service goes on
            return JSONResponse({"error": f"translation failed: {type(exc).__name__}: {exc}"}, status_code=500)
        return Response(await run_in_threadpool(_png, result), media_type="image/png")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        worker.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/info", get_info),
            Route("/translate", translate, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.translator = translator
    return app
