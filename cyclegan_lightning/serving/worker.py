"""The one thread that runs the generator for the service, batching requests that queue up while it computes.

Torch is called from this thread only: the event loop never blocks on a forward pass, and concurrent requests never
run forwards at once on the same modules (they would fight over the same cores and the runners' first-call setup).
Requests that arrive while a batch computes wait in the queue; the next round takes every waiting request of the
same direction and image shape (up to ``max_batch_size``) as one batch (``Translator.translate_loaded`` stacks
them). Nothing waits for a batch to fill: a lone request starts at once, so batching never adds latency.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from cyclegan_lightning.data.images import LoadedImage
from cyclegan_lightning.inference.translator import Translator

log = logging.getLogger(__name__)


@dataclass
class _Request:
    image: LoadedImage
    direction: str
    result: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return self.direction, tuple(self.image.image.shape)


class TranslationWorker:
    """Runs ``translator`` in one daemon thread; ``submit`` returns a future of the translated image."""

    def __init__(self, translator: Translator, max_batch_size: int = 1):
        self.translator = translator
        self.max_batch_size = max(1, int(max_batch_size))
        self.batches: list[int] = []  # size of each batch run (the tests and the bench read it)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="translate", daemon=True)
        self._thread.start()

    def submit(self, image: LoadedImage, direction: str) -> Future:
        request = _Request(image, direction)
        self._queue.put(request)
        return request.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        waiting: deque[_Request] = deque()
        while True:
            if not waiting:
                item = self._queue.get()  # idle: block until a request (or the stop marker) arrives
                if item is None:
                    return
                waiting.append(item)
            while True:  # everything that queued up meanwhile
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after the waiting requests
                    break
                waiting.append(item)
            first = waiting.popleft()
            batch, others = [first], deque()
            while waiting:
                item = waiting.popleft()
                (batch if item.key == first.key and len(batch) < self.max_batch_size else others).append(item)
            waiting = others
            self._translate(batch)

    def _translate(self, batch: list[_Request]) -> None:
        self.batches.append(len(batch))
        try:
            outputs = self.translator.translate_loaded([r.image for r in batch], batch[0].direction)
        except Exception as exc:  # noqa: BLE001 -- e.g. out of memory: these requests fail, the service goes on
            log.exception("translation of a batch of %d failed", len(batch))
            for r in batch:
                r.result.set_exception(exc)
            return
        for r, out in zip(batch, outputs):
            r.result.set_result(out)
