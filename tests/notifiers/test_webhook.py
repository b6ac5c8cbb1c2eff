"""WebhookNotifier and Apprise's HTTP schemes against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from email.utils import formatdate

import pytest

from notifiers import (
    AppriseNotifier,
    ChannelConfigError,
    Message,
    Notifier,
    WebhookNotifier,
)
from tests.integration.http_receiver import HttpReceiver, Reply, free_port

pytestmark = pytest.mark.integration

SECRET = "whsec-0123456789abcdef"
TOKEN = "Bearer tok-9f8e7d6c5b4a"
NOW = 1_790_000_000


@pytest.fixture
async def webhook(http_receiver: HttpReceiver) -> AsyncIterator[WebhookNotifier]:
    notifier = WebhookNotifier(
        http_receiver.url("/hook"),
        headers={"Authorization": TOKEN},
        secret=SECRET,
        timeout=1.0,
        clock=lambda: NOW,
    )
    yield notifier
    await notifier.aclose()


def verify(header: str, body: bytes, secret: str, now: int, tolerance: int = 300) -> bool:
    """The receiver side, written from the documented algorithm only."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    fresh = abs(now - int(fields["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected.hexdigest(), fields["v1"])


async def test_posts_json_with_key_and_verifiable_signature(
    webhook: WebhookNotifier, http_receiver: HttpReceiver
) -> None:
    """The body carries the message and key; headers carry the key and a valid signature."""
    message = Message("Run failed", "etl crashed", attributes={"state": "Failed"})
    result = await webhook.send(message, idempotency_key="firing-1:0")

    assert result.ok, result.reason
    assert result.status_code == 200
    [request] = await http_receiver.wait_for_async(1)
    assert request.method == "POST"
    assert request.json == {
        "subject": "Run failed",
        "body": "etl crashed",
        "format": "text",
        "attributes": {"state": "Failed"},
        "idempotency_key": "firing-1:0",
    }
    assert request.headers["Idempotency-Key"] == "firing-1:0"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == TOKEN
    signature = request.headers["Runbell-Signature"]
    assert signature.startswith(f"t={NOW},v1=")
    assert verify(signature, request.body, SECRET, now=NOW + 10)
    assert not verify(signature, request.body + b" ", SECRET, now=NOW)
    assert not verify(signature, request.body, "other-secret", now=NOW)
    assert not verify(signature, request.body, SECRET, now=NOW + 301)


async def test_unsigned_without_secret_and_method_is_configurable(
    http_receiver: HttpReceiver,
) -> None:
    """Without a secret there is no signature header; PUT is used when asked."""
    notifier = WebhookNotifier(http_receiver.url("/put"), method="put")
    try:
        assert (await notifier.send(Message("s", "b"), idempotency_key="k")).ok
    finally:
        await notifier.aclose()
    [request] = await http_receiver.wait_for_async(1)
    assert request.method == "PUT"
    assert "Runbell-Signature" not in request.headers


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (408, True), (400, False), (404, False)]
)
async def test_non_2xx_is_a_failure(
    webhook: WebhookNotifier, http_receiver: HttpReceiver, status: int, retryable: bool
) -> None:
    """Any non-2xx answer fails; 5xx and 408 may be retried, other 4xx may not."""
    http_receiver.script("/hook", Reply(status=status, body="nope"))
    result = await webhook.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, retryable, status)
    assert str(status) in result.reason


async def test_redirect_is_not_followed(
    webhook: WebhookNotifier, http_receiver: HttpReceiver
) -> None:
    """A 3xx is a non-retryable failure, not a silent success elsewhere."""
    http_receiver.script("/hook", Reply(status=302, headers={"Location": "/elsewhere"}))
    result = await webhook.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, False, 302)
    assert len(http_receiver.requests) == 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_is_retryable_with_retry_after(
    webhook: WebhookNotifier, http_receiver: HttpReceiver, form: str
) -> None:
    """429 is retryable; Retry-After (seconds, or a date measured against Date) is kept."""
    # The receiver stamps its own Date header (now), so the date form is built from now.
    value = "30" if form == "seconds" else formatdate(time.time() + 30, usegmt=True)
    http_receiver.script("/hook", Reply(status=429, headers={"Retry-After": value}))
    result = await webhook.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, True, 429)
    assert result.retry_after is not None
    assert 28.0 <= result.retry_after <= 30.0


async def test_429_without_retry_after_has_none(
    webhook: WebhookNotifier, http_receiver: HttpReceiver
) -> None:
    """No Retry-After header means no retry_after: the pipeline's backoff decides."""
    http_receiver.script("/hook", Reply(status=429))
    result = await webhook.send(Message("s", "b"), idempotency_key="k")
    assert (result.retryable, result.retry_after) == (True, None)


async def test_hanging_server_times_out(
    webhook: WebhookNotifier, http_receiver: HttpReceiver
) -> None:
    """A server that holds the answer past the timeout yields a retryable failure in time."""
    http_receiver.script("/hook", Reply(hang=10))
    started = time.monotonic()
    result = await webhook.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable) == (False, True)
    assert "timed out" in result.reason
    assert time.monotonic() - started < 1.0 + 1.0


async def test_refused_connection_is_retryable() -> None:
    """Nothing listening is a retryable connection failure."""
    notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/hook", timeout=1)
    try:
        result = await notifier.send(Message("s", "b"), idempotency_key="k")
    finally:
        await notifier.aclose()
    assert (result.ok, result.retryable) == (False, True)
    assert "connection failed" in result.reason


async def test_secrets_stay_out_of_target_reason_and_logs(
    http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """URL token, header values and the signing secret never show up."""
    url_token = "a1b2c3d4e5f6g7h8i9j0k1l2"
    notifier = WebhookNotifier(
        http_receiver.url(f"/hooks/{url_token}"),
        headers={"Authorization": TOKEN},
        secret=SECRET,
    )
    assert isinstance(notifier, Notifier)
    http_receiver.script(f"/hooks/{url_token}", Reply(status=500))
    with caplog.at_level(logging.DEBUG):
        result = await notifier.send(Message("s", "b"), idempotency_key="k")
        await notifier.aclose()
    shown = f"{notifier.target} {notifier!r} {result.reason} {result.target} {caplog.text}"
    assert "HTTP Request" in caplog.text  # httpx did log the request...
    for secret in (url_token, TOKEN, SECRET):
        assert secret not in shown  # ...without the secrets
    assert notifier.target.startswith("POST http://127.0.0.1:")


def test_bad_config_is_rejected() -> None:
    """Only http(s) URLs and body-carrying methods are accepted."""
    with pytest.raises(ChannelConfigError):
        WebhookNotifier(f"ftp://user:{SECRET}@example.com/x")
    with pytest.raises(ChannelConfigError):
        WebhookNotifier("https://example.com/x", method="GET")


@pytest.mark.parametrize("scheme", ["json", "form", "xml"])
async def test_apprise_http_schemes_send_idempotency_key_header(
    http_receiver: HttpReceiver, scheme: str
) -> None:
    """Apprise json://, form:// and xml:// carry the key as an Idempotency-Key header."""
    notifier = AppriseNotifier(f"{scheme}://127.0.0.1:{http_receiver.port}/hook?+X-Team=ops")
    first = notifier.send(Message("s", "1"), idempotency_key="firing-1:0")
    second = notifier.send(Message("s", "2"), idempotency_key="firing-2:0")
    results = await asyncio.gather(first, second)

    assert all(r.ok for r in results), [r.reason for r in results]
    requests = await http_receiver.wait_for_async(2)
    assert sorted(r.headers["Idempotency-Key"] for r in requests) == ["firing-1:0", "firing-2:0"]
    assert all(r.headers["X-Team"] == "ops" for r in requests)  # the URL's own headers stay


def test_apprise_keyed_send_setup_costs_well_under_a_millisecond() -> None:
    """Building the per-send Apprise object with the key header costs < 1 ms."""
    notifier = AppriseNotifier("json://127.0.0.1:9/hook")
    rounds = 200
    started = time.perf_counter()
    for n in range(rounds):
        notifier._keyed_apprise(f"key-{n}")
    per_send_ms = (time.perf_counter() - started) * 1000 / rounds
    assert per_send_ms < 1.0, per_send_ms
