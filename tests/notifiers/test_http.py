"""notifiers.http: the one outbound client, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from notifiers import HttpClient, retry_after_seconds
from notifiers.http import register_secrets
from tests.integration.http_receiver import HttpReceiver, Reply, free_port

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Token-9f8e7d6c"


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(timeout=1.0, headers={"Authorization": f"Bearer {SECRET}"})
    yield http
    await http.aclose()


async def test_2xx_is_ok_with_status_body_and_headers(
    client: HttpClient, http_receiver: HttpReceiver
) -> None:
    """A 2xx answer is a success; the reply keeps the body and headers for the caller."""
    http_receiver.script("/x", Reply(status=201, body={"id": "r1"}, headers={"X-Run": "r1"}))
    reply = await client.request("POST", http_receiver.url("/x"), target="t", what="thing")
    assert (reply.result.ok, reply.result.status_code, reply.result.target) == (True, 201, "t")
    assert reply.result.reason == "thing answered HTTP 201"
    assert reply.json() == {"id": "r1"}
    assert reply.headers["x-run"] == "r1"  # case-insensitive


async def test_json_body_and_headers_are_sent(
    client: HttpClient, http_receiver: HttpReceiver
) -> None:
    """``json=`` is encoded with its Content-Type; client and request headers both travel."""
    await client.request(
        "PUT",
        http_receiver.url("/x"),
        target="t",
        what="thing",
        json={"n": 1, "s": "é"},
        headers={"Idempotency-Key": "k1"},
    )
    [request] = await http_receiver.wait_for_async(1)
    assert (request.method, request.json) == ("PUT", {"n": 1, "s": "é"})
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "k1"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (425, True), (400, False), (404, False)],
)
async def test_status_codes_become_results(
    client: HttpClient, http_receiver: HttpReceiver, status: int, retryable: bool
) -> None:
    """5xx/429/408/425 are retryable (Retry-After honoured); other 4xx are not."""
    http_receiver.script("/x", Reply(status=status, body="nope", headers={"Retry-After": "7"}))
    reply = await client.request("POST", http_receiver.url("/x"), target="t", what="thing")
    result = reply.result
    assert (result.ok, result.retryable, result.status_code) == (False, retryable, status)
    assert result.reason == f"thing answered HTTP {status}: nope"
    assert result.retry_after == 7.0


async def test_redirect_is_not_followed(client: HttpClient, http_receiver: HttpReceiver) -> None:
    """A 3xx is returned as a non-retryable failure; the Location is never requested."""
    http_receiver.script("/x", Reply(status=302, headers={"Location": "/elsewhere"}))
    reply = await client.request("POST", http_receiver.url("/x"), target="t", what="thing")
    assert (reply.result.ok, reply.result.retryable, reply.result.status_code) == (
        False,
        False,
        302,
    )
    assert [r.path for r in http_receiver.requests] == ["/x"]


async def test_one_deadline_per_request(client: HttpClient, http_receiver: HttpReceiver) -> None:
    """A hanging answer is a retryable timeout, in time; ``timeout=`` overrides the default."""
    http_receiver.script("/x", Reply(hang=10), Reply(hang=10))
    started = time.monotonic()
    reply = await client.request("POST", http_receiver.url("/x"), target="t", what="thing")
    assert (reply.result.ok, reply.result.retryable) == (False, True)
    assert reply.result.reason == "timed out after 1s"
    assert time.monotonic() - started < 2.0
    short = await client.request(
        "POST", http_receiver.url("/x"), target="t", what="thing", timeout=0.2
    )
    assert short.result.reason == "timed out after 0.2s"


async def test_refused_connection_is_retryable(client: HttpClient) -> None:
    """Nobody listening is a retryable connection failure, named by type only."""
    reply = await client.request(
        "POST", f"http://127.0.0.1:{free_port()}/x", target="t", what="thing"
    )
    assert (reply.result.ok, reply.result.retryable) == (False, True)
    assert reply.result.reason.startswith("connection failed (")
    assert "127.0.0.1" not in reply.result.reason


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://", "not a url"])
async def test_invalid_url_is_not_retryable(client: HttpClient, url: str) -> None:
    """A URL that cannot be requested needs a person: not retryable, and not quoted."""
    reply = await client.request("POST", url, target="t", what="thing")
    assert (reply.result.ok, reply.result.retryable) == (False, False)
    assert url not in reply.result.reason


async def test_bad_header_value_is_not_retryable(
    client: HttpClient, http_receiver: HttpReceiver
) -> None:
    """A header value with a line break (a rendered template, say) fails, unsent."""
    reply = await client.request(
        "POST", http_receiver.url("/x"), target="t", what="thing", headers={"X-A": "a\r\nX-B: b"}
    )
    assert (reply.result.ok, reply.result.retryable) == (False, False)
    assert http_receiver.requests == []


async def test_secrets_scrubbed_from_excerpts_and_logs(
    client: HttpClient, http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer echoing the client's bearer token is scrubbed; the debug log masks the URL."""
    http_receiver.script("/hook/" + SECRET, Reply(status=401, body=f"bad token {SECRET}"))
    with caplog.at_level(logging.DEBUG, logger="runbell.http"):
        reply = await client.request(
            "POST", http_receiver.url("/hook/" + SECRET), target="t", what="thing"
        )
    assert reply.result.status_code == 401
    assert "HTTP Request: POST" in caplog.text
    assert SECRET not in reply.result.reason + caplog.text


async def test_request_secrets_scrubbed_by_value_from_excerpts(
    client: HttpClient, http_receiver: HttpReceiver
) -> None:
    """A URL's secret query value and a request header (say, rendered from event data,
    so never registered) are masked wherever the answer echoes them, encoded or not."""
    token, key = "evt tok/4b3a2c1d", "hdr-key-8e7f6a5b"
    echo = f"GET /echo?access_token=evt+tok/4b3a2c1d HTTP/1.1 X-Api-Key: {key} ({token})"
    http_receiver.script("/echo", Reply(status=500, body=echo))
    reply = await client.request(
        "GET",
        http_receiver.url("/echo") + "?access_token=evt%20tok%2F4b3a2c1d",
        target="t",
        what="webhook",
        headers={"X-Api-Key": key, "Content-Type": "text/plain"},
    )
    reason = reply.result.reason
    assert reason.startswith("webhook answered HTTP 500: GET /echo?access_token=*** ")
    assert "4b3a2c1d" not in reason and key not in reason


async def test_a_secret_at_the_excerpt_cut_is_masked_whole(
    client: HttpClient, http_receiver: HttpReceiver
) -> None:
    """The excerpt is scrubbed before it is cut: a registered secret spanning the cut
    is not quoted by its first half."""
    secret = "cut-SECRET-0a9b8c7d6e5f"
    register_secrets(secret)
    http_receiver.script("/cut", Reply(status=500, body="x" * 190 + secret))
    reply = await client.request("POST", http_receiver.url("/cut"), target="t", what="thing")
    assert "cut-SECRET" not in reply.result.reason
    assert reply.result.reason.endswith("x***")


def test_one_client_serves_successive_event_loops(http_receiver: HttpReceiver) -> None:
    """A client used from a second event loop opens a session there (sessions are per loop)."""
    client = HttpClient(timeout=1.0)

    async def once() -> bool:
        reply = await client.request("GET", http_receiver.url("/x"), target="t", what="thing")
        return reply.result.ok

    assert asyncio.run(once())

    async def again() -> bool:
        ok = await once()
        await client.aclose()
        return ok

    assert asyncio.run(again())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "12"}, 12.0),
        (
            {
                "Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT",
                "Date": "Wed, 21 Oct 2026 07:28:00 GMT",
            },
            30.0,
        ),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT"}, None),  # no Date: no local clock
        ({"Retry-After": "soon"}, None),
        (  # a doubled Date (two servers' headers joined): no zone, so no answer, no error
            {
                "Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT",
                "Date": "Wed, 21 Oct 2026 07:28:00 GMT, Wed, 21 Oct 2026 07:28:00 GMT",
            },
            None,
        ),
        (
            {"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT", "Date": "21 Oct 2026 07:28:00"},
            None,
        ),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After as delta-seconds, or an HTTP-date measured against the answer's Date."""
    assert retry_after_seconds(headers) == expected


async def test_proxy_from_the_environment(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured (as httpx's trust_env does), and NO_PROXY bypasses it."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", http_receiver.url(""))
    client = HttpClient(timeout=1.0)
    try:
        reply = await client.request("GET", "http://upstream.invalid/x", target="t", what="thing")
        assert reply.result.ok, reply.result.reason
        [request] = await http_receiver.wait_for_async(1)
        assert (request.path, request.headers["Host"]) == ("/x", "upstream.invalid")
    finally:
        await client.aclose()
    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    bypassing = HttpClient(timeout=1.0)
    try:
        reply = await bypassing.request("GET", "http://upstream.invalid/x", target="t", what="t")
        assert not reply.result.ok  # straight to a host that does not resolve
    finally:
        await bypassing.aclose()
