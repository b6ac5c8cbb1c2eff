"""A lean HTTP/1.1 client for the notification hot path (one POST per alert).

Why not httpx here: on the delivery path httpx/httpcore cost about half of the
service's CPU per notification (anyio stream wrappers, a pool that polls every
pooled socket on each request, headers and body written in two syscalls). This
client does one thing: send one request on a keep-alive connection from a
small per-origin pool and read one answer, in an ``asyncio.Protocol``.

* HTTP/1.1 only, ``http`` and ``https`` (TLS verified with the system's
  default context); answers with ``Content-Length``, ``chunked`` or
  close-delimited bodies; ``gzip``/``deflate`` bodies are decoded.
* One deadline (``timeout``) covers waiting for a connection, connecting,
  sending and reading; a connection whose request did not finish is closed.
* No redirects (a 3xx is returned as is), no cookies, no retries: the
  dispatcher owns retries.
* When a proxy is configured for the target in the environment
  (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, ``NO_PROXY``), the request goes
  through ``httpx`` instead, which honours it.
* Nothing is logged but, at DEBUG, ``HTTP Request: <method> <masked url> <status>``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx
import orjson

from notifiers.secrets import mask_url

__all__ = [
    "HttpConnectError",
    "HttpError",
    "HttpTimeout",
    "LeanClient",
    "LeanResponse",
    "UnsupportedUrl",
]

log = logging.getLogger("runbell.http")

MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is reused for (httpcore's default)


class HttpError(Exception):
    """A request that got no (valid) answer; the message never quotes the URL."""


class HttpTimeout(HttpError):
    """The deadline passed before the answer was read."""


class HttpConnectError(HttpError):
    """Connecting, sending or reading failed, or the server broke the protocol."""


class UnsupportedUrl(HttpError):
    """Not an ``http://`` or ``https://`` URL, or a header that cannot be sent."""


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively (repeated ones joined by ``, ``)."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items  # lower-case names

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class LeanResponse:
    status_code: int
    headers: Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return orjson.loads(self.content)


_Parsed = tuple[int, dict[str, str], bytes, bool]


def _parse(buf: bytearray, *, eof: bool, head_only: bool) -> _Parsed | None:
    """One response from the start of ``buf``: (status, headers, body, reusable), or
    ``None`` while incomplete. Consumes what it parsed."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise HttpConnectError("response head too large")
            if eof:
                raise HttpConnectError("server disconnected without a complete answer")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code_text = rest[:3]
        if not version.startswith("HTTP/1.") or not code_text.isdigit():
            raise HttpConnectError("malformed response status line")
        code = int(code_text)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpConnectError("malformed response header")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        start = end + 4
        if 100 <= code < 200 and code != 101:  # an interim answer: the real one follows
            del buf[:start]
            continue
        break
    reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if head_only or code in (204, 304):
        body, consumed = b"", start
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        chunked = _chunked(buf, start)
        if chunked is None:
            if eof:
                raise HttpConnectError("server disconnected in a chunked body")
            return None
        body, consumed = chunked
    elif "content-length" in headers:
        length_text = headers["content-length"].split(",")[0].strip()
        if not length_text.isdigit() or int(length_text) > MAX_BODY:
            raise HttpConnectError("bad or oversized Content-Length")
        consumed = start + int(length_text)
        if len(buf) < consumed:
            if eof:
                raise HttpConnectError("server disconnected in the body")
            return None
        body = bytes(buf[start:consumed])
    else:  # delimited by the end of the connection
        if not eof:
            if len(buf) - start > MAX_BODY:
                raise HttpConnectError("response body too large")
            return None
        body, consumed, reusable = bytes(buf[start:]), len(buf), False
    del buf[:consumed]
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate") and body:
        try:
            wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
            body = zlib.decompress(body, wbits)
        except zlib.error as exc:
            raise HttpConnectError("undecodable compressed body") from exc
    return code, headers, body, reusable


def _chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    size_total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise HttpConnectError("malformed chunk size") from exc
        pos = eol + 2
        if size == 0:  # trailers, then an empty line
            if buf[pos : pos + 2] == b"\r\n":
                return b"".join(parts), pos + 2
            trailers_end = buf.find(b"\r\n\r\n", pos)
            return None if trailers_end < 0 else (b"".join(parts), trailers_end + 4)
        size_total += size
        if size_total > MAX_BODY:
            raise HttpConnectError("response body too large")
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Connection(asyncio.Protocol):
    __slots__ = ("buf", "closed", "head_only", "idle_since", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[_Parsed] | None = None
        self.closed = False
        self.head_only = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:  # unsolicited bytes on an idle connection: never reuse it
            self.close()
        else:
            self._answer(eof=False)

    def eof_received(self) -> bool:
        self.closed = True
        if self.waiter is not None:
            self._answer(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None:
            self._answer(eof=True)

    def _answer(self, *, eof: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = _parse(self.buf, eof=eof, head_only=self.head_only)
        except HttpError as exc:
            waiter.set_exception(exc)
            return
        if parsed is not None:
            waiter.set_result(parsed)

    async def exchange(self, data: bytes, *, head_only: bool) -> _Parsed:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.head_only = head_only
        try:
            self.transport.write(data)
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: bytes  # request line's path + Host header, ready to join
    proxied: bool


class _Pool:
    """Keep-alive connections to one origin, at most ``limit`` open at once."""

    def __init__(self, target: _Target, limit: int, tls: ssl.SSLContext | None) -> None:
        self.target = target
        self.limit = limit
        self.tls = tls
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self) -> _Connection:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_EXPIRY:
                return conn
            self._discard(conn)
        if self.open >= self.limit:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                got = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back(waiter.result())
                raise
            if got is not None:
                return got
        else:
            self.open += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Connection,
                self.target.host,
                self.target.port,
                ssl=self.tls,
                server_hostname=self.target.host if self.tls is not None else None,
            )
        except BaseException:
            self.open -= 1
            self._wake()
            raise
        return conn

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if not reusable or conn.closed:
            self._discard(conn)
            return
        conn.idle_since = time.monotonic()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def _give_back(self, got: _Connection | None) -> None:
        if got is None:
            self.open -= 1
            self._wake()
        else:
            self.release(got, reusable=True)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self.open -= 1
        self._wake()

    def _wake(self) -> None:
        """Let the first waiter open a new connection if there is room."""
        while self.waiters and self.open < self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.open += 1
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class LeanClient:
    """``post`` / ``request`` over pooled keep-alive connections; see the module docstring."""

    def __init__(
        self,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 16,
        user_agent: str = "runbell",
    ) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        base = {"User-Agent": user_agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        base.update(headers or {})
        self._headers = dict(base)
        self._head_tail = _header_bytes(base)
        self._targets: dict[str, _Target] = {}
        # Per-request header mappings a caller reuses (module constants): encoded once.
        self._encoded: dict[int, tuple[Mapping[str, str], bytes]] = {}
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls: ssl.SSLContext | None = None
        self._httpx: httpx.AsyncClient | None = None

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None
    ) -> LeanResponse:
        return await self.request("POST", url, content=content, headers=headers)

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> LeanResponse:
        """Send one request; raises ``HttpTimeout``, ``HttpConnectError`` or ``UnsupportedUrl``."""
        target = self._target(url)
        if target.proxied:
            return await self._via_httpx(method, url, content, headers)
        data = b"".join(
            (
                method.encode("ascii"),
                b" ",
                target.head,
                self._head_tail,
                self._extra_headers(headers) if headers else b"",
                b"Content-Length: %d\r\n\r\n" % len(content),
                content,
            )
        )
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool(
                target, self.max_connections, self._tls_context() if target.tls else None
            )
        try:
            async with asyncio.timeout(self.timeout):
                conn = await pool.acquire()
                reusable = False
                try:
                    code, found, body, keep = await conn.exchange(data, head_only=method == "HEAD")
                    reusable = keep and not conn.buf
                finally:
                    pool.release(conn, reusable=reusable)
        except TimeoutError:
            raise HttpTimeout(f"no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise HttpConnectError(f"connection failed ({type(exc).__name__})") from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HTTP Request: %s %s %d", method, mask_url(url), code)
        return LeanResponse(code, Headers(found), body)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._httpx is not None:
            await self._httpx.aclose()
            self._httpx = None

    def _extra_headers(self, headers: Mapping[str, str]) -> bytes:
        cached = self._encoded.get(id(headers))
        if cached is not None and cached[0] is headers:
            return cached[1]
        encoded = _header_bytes(headers)
        if isinstance(headers, MappingProxyType) and len(self._encoded) < 64:
            self._encoded[id(headers)] = (headers, encoded)
        return encoded

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is not None:
            return target
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            raise UnsupportedUrl("the URL has an invalid port") from None
        if scheme not in ("http", "https") or not parts.hostname:
            raise UnsupportedUrl("only http:// and https:// URLs with a host are supported")
        host = parts.hostname
        port = port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.netloc.rpartition("@")[2]
        if any(c in path or c in host_header for c in " \r\n"):
            raise UnsupportedUrl("the URL has whitespace in its path or host")
        target = _Target(
            origin=(scheme, host, port),
            host=host,
            port=port,
            tls=scheme == "https",
            head=f"{path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("idna"),
            proxied=_proxied(scheme, host),
        )
        if len(self._targets) < 1024:
            self._targets[url] = target
        return target

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def _via_httpx(
        self, method: str, url: str, content: bytes, headers: Mapping[str, str] | None
    ) -> LeanResponse:
        if self._httpx is None:
            self._httpx = httpx.AsyncClient(
                timeout=self.timeout, headers=self._headers, follow_redirects=False
            )
        try:
            response = await self._httpx.request(method, url, content=content, headers=headers)
        except httpx.TimeoutException:
            raise HttpTimeout(f"no answer within {self.timeout:g}s") from None
        except httpx.UnsupportedProtocol:
            raise UnsupportedUrl("unsupported URL") from None
        except httpx.HTTPError as exc:
            raise HttpConnectError(f"connection failed ({type(exc).__name__})") from None
        found = {k.lower(): v for k, v in response.headers.multi_items()}
        return LeanResponse(response.status_code, Headers(found), response.content)


def _header_bytes(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n") or ":" in name:
            raise UnsupportedUrl("a header name or value holds a line break or colon")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise UnsupportedUrl("a header value is not Latin-1") from None


def _proxied(scheme: str, host: str) -> bool:
    proxies = getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not proxy_bypass(host)
