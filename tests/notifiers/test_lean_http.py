"""The lean HTTP/1.1 client against real sockets on 127.0.0.1 (scripted raw answers)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import uvloop

from notifiers._lean_http import HttpConnectError, HttpTimeout, LeanClient, UnsupportedUrl

Answer = Callable[[bytes], bytes | None]  # request head + body → raw answer (None: hang)


class RawServer:
    """Reads one request at a time per connection, answers with ``answer(request)``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook/path?x=1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    await reader.read()  # hang until the client goes away
                    return
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        server = RawServer(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.server is not None:
            for writer in server.writers:
                writer.close()
            server.server.close()


async def serving(server: RawServer) -> RawServer:
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    return server


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_post_sends_one_request_and_reuses_the_connection(raw) -> None:  # type: ignore[no-untyped-def]
    server = await serving(raw(lambda _: ok()))
    client = LeanClient(timeout=2.0, headers={"Authorization": "Bearer t"})
    try:
        for i in range(3):
            answer = await client.post(
                server.url, content=orjson.dumps({"i": i}), headers={"Content-Type": "a/b"}
            )
            assert (answer.status_code, answer.text, answer.is_success) == (200, "ok", True)
    finally:
        await client.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /hook/path?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Authorization: Bearer t\r\n" in first
    assert b"Content-Type: a/b\r\n" in first
    assert first.endswith(b'\r\n\r\n{"i":0}')


async def test_chunked_gzip_headers_and_interim_answers(raw) -> None:  # type: ignore[no-untyped-def]
    packed = gzip.compress(b'{"ok": true, "ts": "1.2"}')
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (packed[:5], packed[5:]))
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
        b"Retry-After: 7\r\nX-A: 1\r\nX-A: 2\r\n\r\n" + chunks + b"0\r\nTrailer: x\r\n\r\n"
    )
    server = await serving(raw(lambda _: answer))
    client = LeanClient(timeout=2.0)
    try:
        got = await client.post(server.url, content=b"{}")
        again = await client.post(server.url, content=b"{}")
    finally:
        await client.aclose()
    assert got.status_code == 429 and not got.is_success
    assert got.json() == {"ok": True, "ts": "1.2"}
    assert got.headers["retry-after"] == "7" and got.headers.get("RETRY-AFTER") == "7"
    assert got.headers["X-A"] == "1, 2"
    assert again.json() == got.json()
    assert server.connections == 1


async def test_close_delimited_and_connection_close_answers_open_a_new_connection(raw) -> None:  # type: ignore[no-untyped-def]
    server = await serving(raw(lambda _: ok(b"bye", b"Connection: close\r\n")))
    client = LeanClient(timeout=2.0)
    try:
        for _ in range(2):
            assert (await client.post(server.url, content=b"")).text == "bye"
    finally:
        await client.aclose()
    assert server.connections == 2


async def test_server_closing_an_idle_connection_is_not_reused(raw) -> None:  # type: ignore[no-untyped-def]
    server = await serving(raw(lambda _: ok()))
    client = LeanClient(timeout=2.0)
    try:
        await client.post(server.url, content=b"")
        [writer] = server.writers
        writer.close()
        await writer.wait_closed()
        pool = next(iter(client._pools.values()))
        await asyncio.wait_for(_until(lambda: pool.idle[0].closed), 2.0)
        assert (await client.post(server.url, content=b"")).text == "ok"
    finally:
        await client.aclose()
    assert server.connections == 2


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run callbacks until ``condition`` holds (bounded by the caller's wait_for)."""
    loop = asyncio.get_running_loop()
    while not condition():
        turn = loop.create_future()
        loop.call_soon(turn.set_result, None)
        await turn


async def test_pool_limit_queues_requests_and_a_timeout_frees_the_connection(raw) -> None:  # type: ignore[no-untyped-def]
    server = await serving(raw(lambda req: None if b"hang" in req else ok()))
    client = LeanClient(timeout=0.3, max_connections=1)
    try:
        with pytest.raises(HttpTimeout):
            await client.post(server.url, content=b"hang")
        answers = await asyncio.gather(*(client.post(server.url, content=b"x") for _ in range(5)))
    finally:
        await client.aclose()
    assert [a.text for a in answers] == ["ok"] * 5
    assert server.connections == 2  # the timed-out one is closed, one more serves the five


async def test_connection_refused_and_bad_answers_and_urls(raw) -> None:  # type: ignore[no-untyped-def]
    server = await serving(raw(lambda _: b"garbage\r\n\r\n"))
    client = LeanClient(timeout=2.0)
    try:
        with pytest.raises(HttpConnectError, match="malformed"):
            await client.post(server.url, content=b"")
        with pytest.raises(HttpConnectError, match="connection failed"):
            await client.post("http://127.0.0.1:1/x", content=b"")
        with pytest.raises(UnsupportedUrl):
            await client.post("ftp://127.0.0.1/x", content=b"")
        with pytest.raises(UnsupportedUrl):
            await client.post(server.url, content=b"", headers={"X": "a\r\nInjected: 1"})
    finally:
        await client.aclose()


def test_works_on_uvloop_as_the_service_runs_it() -> None:
    """``runbell serve`` runs on uvloop (uvicorn's default when installed): same client there."""

    async def main() -> tuple[int, str]:
        server = await serving(RawServer(lambda _: ok(b"uv")))
        client = LeanClient(timeout=2.0)
        try:
            answers = [await client.post(server.url, content=b"{}") for _ in range(2)]
        finally:
            await client.aclose()
            assert server.server is not None
            for writer in server.writers:
                writer.close()
            server.server.close()
        return server.connections, answers[-1].text

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == (1, "uv")
