"""A real HTTP server on 127.0.0.1 that records requests and plays scripted responses.

Use the ``http_receiver`` fixture (registered in ``tests/conftest.py``)::

    def test_x(http_receiver):
        http_receiver.script("/hook", Reply(status=500), Reply(status=200))
        ... send to http_receiver.url("/hook") ...
        [req] = http_receiver.wait_for(1)
        assert req.json == {...}

Waiting is on a condition variable (never a sleep loop). ``Reply(hang=s)``
holds the response for up to ``s`` seconds (capped at ``MAX_HANG``), released
early when the fixture shuts down, so a hanging test never outlives its test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = ["MAX_HANG", "HttpReceiver", "RecordedRequest", "Reply", "free_port", "http_receiver"]

MAX_HANG = 30.0


@dataclass(frozen=True)
class Reply:
    """A scripted response; ``hang`` delays it (seconds, capped at ``MAX_HANG``)."""

    status: int = 200
    body: bytes | str | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: float = 0.0

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, Mapping):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            return self.body.encode(), headers
        return self.body, headers


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class HttpReceiver:
    """The server behind the ``http_receiver`` fixture; see the module docstring."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self.default_reply = Reply(status=200, body=b"ok")
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # A short poll keeps shutdown() (and so fixture teardown) fast.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="http-receiver",
            daemon=True,
        )

    # -- lifecycle -------------------------------------------------------
    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # releases hanging handlers at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- addresses -------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """``http://127.0.0.1:<port><path>``."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- scripting -------------------------------------------------------
    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for ``path``, used once each in order; then the default applies."""
        with self._cond:
            self._scripts[path].extend(replies)

    def always(self, path: str, reply: Reply) -> None:
        """Answer ``path`` with ``reply`` whenever its queue is empty."""
        with self._cond:
            self._defaults[path] = reply

    # -- observing -------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; return them all.

        Raises ``TimeoutError`` naming how many did arrive.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} request(s) within {timeout}s, got {len(self._requests)}"
                )
            return list(self._requests)

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """``wait_for`` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    # -- server side -----------------------------------------------------
    def _record_and_pick(self, request: RecordedRequest) -> Reply:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            queue = self._scripts.get(request.path)
            if queue:
                return queue.popleft()
            return self._defaults.get(request.path, self.default_reply)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                reply = receiver._record_and_pick(
                    RecordedRequest(
                        method=self.command,
                        path=parts.path,
                        query=parts.query,
                        headers={k: v for k, v in self.headers.items()},
                        body=body,
                    )
                )
                if reply.hang > 0:
                    receiver._closing.wait(min(reply.hang, MAX_HANG))
                payload, headers = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test); nothing to tell it

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # requests are recorded; stderr noise helps no one

        return Handler


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A recording, scriptable HTTP server on 127.0.0.1, shut down after the test."""
    receiver = HttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.close()
