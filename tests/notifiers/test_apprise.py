"""AppriseNotifier against a real HTTP server on 127.0.0.1 (Apprise's json:// plugin)."""

from __future__ import annotations

import logging
import time

import pytest

from notifiers import AppriseNotifier, ChannelConfigError, Message, Notifier
from tests.integration.http_receiver import HttpReceiver, Reply, free_port

pytestmark = pytest.mark.integration

SECRET = "hunter2-s3cret"


def json_url(receiver: HttpReceiver, path: str = "/hook") -> str:
    return f"json://alerts:{SECRET}@127.0.0.1:{receiver.port}{path}"


async def test_delivers_subject_and_body_as_apprise_json(http_receiver: HttpReceiver) -> None:
    """A json:// target receives Apprise's payload: title, message, type."""
    notifier = AppriseNotifier(json_url(http_receiver))
    result = await notifier.send(Message("Run failed", "flow etl crashed"), idempotency_key="k1")

    assert result.ok, result.reason
    assert not result.retryable
    [request] = await http_receiver.wait_for_async(1)
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.json["title"] == "Run failed"
    assert request.json["message"] == "flow etl crashed"
    assert request.json["type"] == "info"
    assert result.latency_ms > 0


async def test_notifier_satisfies_protocol_and_masks_target(http_receiver: HttpReceiver) -> None:
    """The target is Apprise's privacy URL without the secret or option noise."""
    notifier = AppriseNotifier(json_url(http_receiver))
    assert isinstance(notifier, Notifier)
    assert SECRET not in notifier.target
    assert SECRET not in repr(notifier)
    assert notifier.target.startswith("json://alerts:")
    assert "retry=" not in notifier.target


async def test_server_error_is_retryable_with_status(http_receiver: HttpReceiver) -> None:
    """A 500 answer is ok=False, retryable, with the status code read from Apprise."""
    http_receiver.script("/hook", Reply(status=500))
    result = await AppriseNotifier(json_url(http_receiver)).send(
        Message("s", "b"), idempotency_key="k"
    )
    assert not result.ok
    assert result.retryable
    assert result.status_code == 500
    assert "500" in result.reason
    assert SECRET not in result.reason


async def test_client_error_is_not_retryable(http_receiver: HttpReceiver) -> None:
    """A 404 answer is a permanent failure."""
    http_receiver.script("/hook", Reply(status=404))
    result = await AppriseNotifier(json_url(http_receiver)).send(
        Message("s", "b"), idempotency_key="k"
    )
    assert (result.ok, result.retryable, result.status_code) == (False, False, 404)


@pytest.mark.parametrize("body", ["", "  \n "])
async def test_an_empty_body_is_refused_once_not_retried(
    http_receiver: HttpReceiver, body: str
) -> None:
    """Apprise refuses an empty body; no retry can change that, so it is not retryable."""
    result = await AppriseNotifier(json_url(http_receiver)).send(
        Message("s", body), idempotency_key="k"
    )
    assert (result.ok, result.retryable) == (False, False)
    assert "empty" in result.reason
    assert http_receiver.requests == []


async def test_too_many_requests_is_retryable(http_receiver: HttpReceiver) -> None:
    """A 429 answer is retryable."""
    http_receiver.script("/hook", Reply(status=429, headers={"Retry-After": "7"}))
    result = await AppriseNotifier(json_url(http_receiver)).send(
        Message("s", "b"), idempotency_key="k"
    )
    assert (result.ok, result.retryable, result.status_code) == (False, True, 429)


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply(status=429, headers={"Retry-After": "120"}), 120.0),
        (Reply(status=503, headers={"Retry-After": "30"}), 30.0),
        # This server adds a Date of its own: two joined Date values cannot measure an
        # HTTP-date Retry-After, which is then ignored (the 503 still counts).
        (
            Reply(
                status=503,
                headers={
                    "Retry-After": "Wed, 21 Oct 2026 07:29:00 GMT",
                    "Date": "Wed, 21 Oct 2026 07:28:00 GMT",
                },
            ),
            None,
        ),
        (Reply(status=503), None),
        (Reply(status=404, headers={"Retry-After": "30"}), None),  # not retried at all
    ],
)
async def test_retry_after_of_the_underlying_answer_is_passed_on(
    http_receiver: HttpReceiver, reply: Reply, retry_after: float | None
) -> None:
    """Apprise reports only a bool; the answer's Retry-After (429/503) is read from the
    HTTP response its plugin received, so the pipeline's retry waits as asked."""
    http_receiver.script("/hook", reply)
    result = await AppriseNotifier(json_url(http_receiver)).send(
        Message("s", "b"), idempotency_key="k"
    )
    assert (result.ok, result.status_code, result.retry_after) == (
        False,
        reply.status,
        retry_after,
    ), result.reason


async def test_unreachable_port_is_retryable() -> None:
    """Connection refused is ok=False and retryable."""
    notifier = AppriseNotifier(f"json://127.0.0.1:{free_port()}/hook", timeout=2)
    result = await notifier.send(Message("s", "b"), idempotency_key="k")
    assert not result.ok
    assert result.retryable
    assert result.status_code is None


async def test_hanging_server_times_out_within_bound(http_receiver: HttpReceiver) -> None:
    """A server that never answers yields a retryable failure soon after the timeout."""
    http_receiver.script("/hook", Reply(hang=10))
    notifier = AppriseNotifier(json_url(http_receiver), timeout=0.5)
    started = time.monotonic()
    result = await notifier.send(Message("s", "b"), idempotency_key="k")
    elapsed = time.monotonic() - started

    assert not result.ok
    assert result.retryable
    assert "timed out" in result.reason, result.reason
    assert elapsed < 0.5 + 1.0


async def test_url_retry_option_is_overridden(http_receiver: HttpReceiver) -> None:
    """Notifiers never retry, even when the URL asks Apprise to."""
    http_receiver.always("/hook", Reply(status=503))
    notifier = AppriseNotifier(json_url(http_receiver) + "?retry=3&wait=0")
    result = await notifier.send(Message("s", "b"), idempotency_key="k")
    assert result.retryable
    assert len(http_receiver.requests) == 1


async def test_consecutive_sends_are_not_throttled(http_receiver: HttpReceiver) -> None:
    """Apprise's client-side throttle sleep is off; rate limiting is the pipeline's job."""
    notifier = AppriseNotifier(json_url(http_receiver), timeout=1)
    for key in ("a", "b", "c"):
        assert (await notifier.send(Message("s", key), idempotency_key=key)).ok
    assert [r.json["message"] for r in http_receiver.wait_for(3)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        (f"nosuchscheme://user:{SECRET}@example.com/x", "nosuchscheme"),
        (f"slack://{SECRET}", "slack"),
    ],
)
def test_bad_url_raises_config_error_without_secret(
    url: str, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsupported or malformed URL names its scheme and never echoes the secret."""
    with caplog.at_level(logging.DEBUG), pytest.raises(ChannelConfigError) as info:
        AppriseNotifier(url)
    assert scheme in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


def test_non_url_raises_config_error_without_echo() -> None:
    """A string that is not a URL at all is rejected without repeating it."""
    with pytest.raises(ChannelConfigError) as info:
        AppriseNotifier(SECRET)
    assert SECRET not in str(info.value)
