"""Local stand-ins for download hosts (never the network): a threaded HTTP server on 127.0.0.1 at a free port, and a
socket that accepts connections and never answers."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Server:
    """``files``: path -> body, served whole; ``truncated``: path -> body, whose full length is promised in
    Content-Length but only half is sent before the connection is closed; any other path: 404. ``requests`` lists
    the paths asked for, in order."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    truncated: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@contextmanager
def local_server() -> Iterator[Server]:
    server = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            server.requests.append(self.path)
            body = server.files.get(self.path, server.truncated.get(self.path))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in server.truncated:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def silent_server() -> Iterator[str]:
    """The base URL of a socket that accepts connections (its backlog) and never answers a request."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"
