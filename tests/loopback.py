"""The shell shared by the loopback test servers: an HTTP server on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: Any


class LoopbackServer:
    """Serves ``handler`` with ``state`` on a free port; use as a context manager."""

    def __init__(self, state: Any, handler: type[BaseHTTPRequestHandler]) -> None:
        self.state = state
        self._httpd = Server(("127.0.0.1", 0), handler)
        self._httpd.state = state
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
