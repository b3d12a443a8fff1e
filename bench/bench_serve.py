"""Requests/s and latency of the HTTP service for 256x256 images with N concurrent clients.

python bench/bench_serve.py                          # starts serve.py on a ResNet-9 from random init, 1 2 4 clients
python bench/bench_serve.py --ckpt <run>/checkpoints/last.ckpt --clients 1 4 --max-batch-size 1 4
python bench/bench_serve.py --url http://127.0.0.1:8000 --clients 4     # a service already running

Each client posts the same 256x256 PNG in a loop (``POST /translate?direction=a2b``) for ``--seconds`` after one
warm-up request each; every response is checked (200, a 256x256 PNG). The service runs in its own process
(``python serve.py``), as users run it, so the clients' Python does not share its interpreter. Prints the machine
and its load, then one line per setting: requests/s, p50 and p95 latency.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import load, machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(ckpt: Path, max_batch_size: str, backend: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        str(ROOT / "serve.py"),
        f"ckpt_path={ckpt}",
        f"port={port}",
        f"max_batch_size={max_batch_size}",
        f"translator.backend={backend}",
        "log_level=warning",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve.py exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("serve.py did not answer /health within 300 s")


def run_clients(url: str, png: bytes, clients: int, seconds: float) -> tuple[int, list[float], float]:
    """(requests done, their latencies in s, wall seconds) with ``clients`` threads posting for ``seconds``."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = [0.0]  # set when every client is warm, before any is released
    start_line = threading.Barrier(clients + 1, action=lambda: stop_at.__setitem__(0, time.perf_counter() + seconds))

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            check(http.post(f"{url}/translate?direction=a2b", files={"image": ("x.png", png, "image/png")}))  # warm
            start_line.wait()
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                response = http.post(f"{url}/translate?direction=a2b", files={"image": ("x.png", png, "image/png")})
                elapsed = time.perf_counter() - t0
                check(response)
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = stop_at[0] - seconds
    for t in threads:
        t.join()
    return len(latencies), latencies, time.perf_counter() - t0


def check(response) -> None:
    if response.status_code != 200 or Image.open(io.BytesIO(response.content)).size != (256, 256):
        raise SystemExit(f"bad response {response.status_code}: {response.text[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (else serve.py is started per setting)")
    parser.add_argument("--ckpt", help="checkpoint to serve (default: a ResNet-9 from random init)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-batch-size", nargs="+", default=["auto"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    print(f"{machine()}; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None and args.url is None:
            import torch

            from cyclegan_lightning.networks import ResnetGenerator

            torch.manual_seed(0)
            ckpt = Path(tmp) / "latest_net_G.pth"
            torch.save(ResnetGenerator(3, 3, ngf=64, n_blocks=9).state_dict(), ckpt)
            print("model: ResNet-9 (ngf 64) from random init, 256x256 PNG uploads, direction a2b")
        for batch in args.max_batch_size:
            proc, url = (None, args.url) if args.url else start_service(ckpt, batch, args.backend)
            try:
                for clients in args.clients:
                    n, lat, wall = run_clients(url, png, clients, args.seconds)
                    lat.sort()
                    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                    print(
                        f"max_batch_size={batch} clients={clients}: {n / wall:.2f} requests/s, "
                        f"p50 {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms ({n} requests)",
                        flush=True,
                    )
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)


if __name__ == "__main__":
    main()
