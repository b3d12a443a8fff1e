"""Helpers of the service tests: a small two-way translator and the service running on a free local port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch


def two_way_translator(folder: Path, **options):
    """A random ResNet (8 filters, 1 block) each way, saved as reference files, loaded as the service would."""
    from cyclegan_lightning.inference import build_translator
    from cyclegan_lightning.networks import ResnetGenerator

    for seed, name in ((0, "latest_net_G_A.pth"), (1, "latest_net_G_B.pth")):
        torch.manual_seed(seed)
        torch.save(ResnetGenerator(3, 3, ngf=8, n_blocks=1).state_dict(), folder / name)
    return build_translator(folder / "latest_net_G_A.pth", {"device": "cpu", "tile_size": None, **options})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1 (a free port); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
