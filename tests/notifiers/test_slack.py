"""SlackNotifier against a real HTTP server on 127.0.0.1 standing in for Slack."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifiers import ChannelConfigError, Message, Notifier, SlackNotifier, default_message
from tests.integration.http_receiver import HttpReceiver, Reply

pytestmark = pytest.mark.integration

TOKEN = "xoxb-1234567890-abcdefghijklmnop"
HOOK_SECRET = "X1y2Z3a4B5c6D7e8F9g0H1i2"
HOOK_PATH = f"/services/T0001/B0002/{HOOK_SECRET}"

ALERT = Message(
    "Flow run 'daft-wallaby' of flow 'etl' failed",
    "full body for email",
    attributes={
        "state": "Failed",
        "state_type": "FAILED",
        "run": "daft-wallaby",
        "flow": "etl",
        "deployment": "etl/prod",
        "duration": "3m 20s",
        "since": "2026-11-21 11:36:31 UTC",
        "summary": "RuntimeError: boom <db>",
        "url": "http://ui.local/resources/flow-run.1",
        "url_label": "Open run",
        "retry_url": "http://runbell.local/retry/1",
        "event": "flow-run.Failed",
        "automation": "etl failures",
    },
)
RESOLVED = Message(
    "Flow run 'daft-wallaby' completed",
    "all good",
    attributes={"state": "Completed", "resolved": "true"},
)


@pytest.fixture
async def bot(http_receiver: HttpReceiver) -> AsyncIterator[SlackNotifier]:
    notifier = SlackNotifier(
        token=TOKEN, channel="#alerts", base_url=http_receiver.url("/api"), timeout=1.0
    )
    yield notifier
    await notifier.aclose()


@pytest.fixture
async def hook(http_receiver: HttpReceiver) -> AsyncIterator[SlackNotifier]:
    notifier = SlackNotifier(webhook_url=http_receiver.url(HOOK_PATH), timeout=1.0)
    yield notifier
    await notifier.aclose()


def posted(ts: str = "1700000000.000100") -> Reply:
    return Reply(body={"ok": True, "channel": "C0123", "ts": ts})


def field_texts(payload: dict[str, Any]) -> list[str]:
    blocks = payload["attachments"][0]["blocks"]
    return [
        f["text"] for b in blocks if b["type"] == "section" and "fields" in b for f in b["fields"]
    ]


async def test_webhook_posts_block_kit_with_colour_fields_buttons_and_fallback(
    hook: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """A webhook gets Block Kit: red bar, fields, summary, URL buttons, fallback text."""
    result = await hook.send(ALERT, idempotency_key="k")
    assert result.ok, result.reason
    assert result.ref is None
    [request] = await http_receiver.wait_for_async(1)
    assert request.path == HOOK_PATH
    payload = request.json

    assert payload["text"].startswith("Flow run 'daft-wallaby' of flow 'etl' failed")
    assert payload["blocks"][0]["text"]["text"] == (
        "*<http://ui.local/resources/flow-run.1|Flow run 'daft-wallaby' of flow 'etl' failed>*"
    )
    [attachment] = payload["attachments"]
    assert attachment["color"] == "#E01E5A"
    blocks = attachment["blocks"]
    assert blocks[0]["text"]["text"] == "RuntimeError: boom &lt;db&gt;"  # mrkdwn-escaped
    assert field_texts(payload) == [
        "*State*\nFailed",
        "*Run*\ndaft-wallaby",
        "*Flow*\netl",
        "*Deployment*\netl/prod",
        "*Duration*\n3m 20s",
        "*Since*\n2026-11-21 11:36:31 UTC",
    ]
    [context] = [b for b in blocks if b["type"] == "context"]
    assert "flow-run.Failed" in context["elements"][0]["text"]
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [(e["text"]["text"], e["url"]) for e in actions["elements"]] == [
        ("Open run", "http://ui.local/resources/flow-run.1"),
        ("Retry", "http://runbell.local/retry/1"),
    ]


@pytest.mark.parametrize(
    ("state", "colour"),
    [
        ("Completed", "#2EB67D"),
        ("Crashed", "#E01E5A"),
        ("Late", "#ECB22E"),
        ("Cancelled", "#9E9EA6"),
    ],
)
async def test_state_sets_colour_bar(
    hook: SlackNotifier, http_receiver: HttpReceiver, state: str, colour: str
) -> None:
    """The attachment colour follows the state."""
    await hook.send(Message("s", "b", attributes={"state": state}), idempotency_key="k")
    [request] = await http_receiver.wait_for_async(1)
    assert request.json["attachments"][0]["color"] == colour


async def test_plain_message_shows_its_body(
    hook: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """A message without structured attributes shows its body and no buttons."""
    await hook.send(Message("Deploy done", "v1.2 is live"), idempotency_key="k")
    [request] = await http_receiver.wait_for_async(1)
    blocks = request.json["attachments"][0]["blocks"]
    assert [b["type"] for b in blocks] == ["section"]
    assert blocks[0]["text"]["text"] == "v1.2 is live"


async def test_default_message_renders_in_slack(
    hook: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """A default message for a failed run reaches Slack with its state message and run link."""
    context = {
        "event": {
            "event": "flow-run.Failed",
            "occurred": "2026-11-21T11:36:31Z",
            "resource": {
                "resource.id": "flow-run.1",
                "resource.name": "daft-wallaby",
                "state-name": "Failed",
                "state-message": "boom",
            },
            "related": [{"resource.id": "flow.9", "resource.role": "flow", "resource.name": "etl"}],
        },
        "ui_base_url": "http://ui.local",
    }
    await hook.send(default_message(context), idempotency_key="k")
    [request] = await http_receiver.wait_for_async(1)
    attachment = request.json["attachments"][0]
    assert attachment["blocks"][0]["text"]["text"] == "boom"
    assert "*Flow*\netl" in field_texts(request.json)
    assert attachment["color"] == "#E01E5A"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (400, False), (404, False), (403, False)]
)
async def test_webhook_http_errors(
    hook: SlackNotifier, http_receiver: HttpReceiver, status: int, retryable: bool
) -> None:
    """Slack webhook 5xx are retryable; 4xx (invalid_payload, channel_not_found) are not."""
    http_receiver.script(HOOK_PATH, Reply(status=status, body="channel_not_found"))
    result = await hook.send(ALERT, idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, retryable, status)
    assert "channel_not_found" in result.reason


async def test_webhook_429_honours_retry_after(
    hook: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """A 429 is retryable and carries Slack's Retry-After."""
    http_receiver.script(HOOK_PATH, Reply(status=429, headers={"Retry-After": "12"}))
    result = await hook.send(ALERT, idempotency_key="k")
    assert (result.ok, result.retryable, result.retry_after) == (False, True, 12.0)


async def test_hanging_slack_times_out(hook: SlackNotifier, http_receiver: HttpReceiver) -> None:
    """Slack holding the answer past the timeout is a retryable failure, in time."""
    http_receiver.script(HOOK_PATH, Reply(hang=10))
    started = time.monotonic()
    result = await hook.send(ALERT, idempotency_key="k")
    assert (result.ok, result.retryable) == (False, True)
    assert "timed out" in result.reason
    assert time.monotonic() - started < 2.0


async def test_bot_posts_with_bearer_token_and_returns_ref(
    bot: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """Bot mode calls chat.postMessage with the bearer token and returns channel and ts."""
    http_receiver.script("/api/chat.postMessage", posted())
    result = await bot.send(ALERT, idempotency_key="k")
    assert result.ok, result.reason
    assert dict(result.ref or {}) == {"channel": "C0123", "ts": "1700000000.000100"}
    [request] = await http_receiver.wait_for_async(1)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.json["channel"] == "#alerts"
    assert request.json["attachments"][0]["color"] == "#E01E5A"


async def test_resolve_updates_original_then_replies_in_thread(
    bot: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """A resolve calls chat.update on the alert, then replies in its thread, both green."""
    http_receiver.script("/api/chat.postMessage", posted("1.1"), posted("1.2"))
    http_receiver.script("/api/chat.update", posted("1.1"))
    alert = await bot.send(ALERT, idempotency_key="k")
    assert alert.ref is not None

    result = await bot.resolve(alert.ref, RESOLVED, idempotency_key="k-resolve")

    assert result.ok, result.reason
    assert dict(result.ref or {}) == {"channel": "C0123", "ts": "1.2"}
    _, update, reply = await http_receiver.wait_for_async(3)
    assert update.path == "/api/chat.update"
    assert (update.json["channel"], update.json["ts"]) == ("C0123", "1.1")
    assert reply.path == "/api/chat.postMessage"
    assert (reply.json["channel"], reply.json["thread_ts"]) == ("C0123", "1.1")
    for request in (update, reply):
        assert request.json["attachments"][0]["color"] == "#2EB67D"
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_resolve_stops_when_update_fails(
    bot: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """If chat.update fails nothing is posted, so a retry cannot leave two replies."""
    http_receiver.script("/api/chat.update", Reply(body={"ok": False, "error": "ratelimited"}))
    result = await bot.resolve({"channel": "C0123", "ts": "1.1"}, RESOLVED, idempotency_key="k")
    assert (result.ok, result.retryable) == (False, True)
    assert [r.path for r in http_receiver.requests] == ["/api/chat.update"]


async def test_resolve_in_webhook_mode_sends_a_new_message(
    hook: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """Incoming webhooks cannot thread or update: a resolve is a plain message."""
    result = await hook.resolve(None, RESOLVED, idempotency_key="k")
    assert result.ok
    [request] = await http_receiver.wait_for_async(1)
    assert request.path == HOOK_PATH


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ("ratelimited", True),
        ("internal_error", True),
        ("invalid_auth", False),
        ("channel_not_found", False),
        ("not_in_channel", False),
    ],
)
async def test_bot_ok_false_errors(
    bot: SlackNotifier, http_receiver: HttpReceiver, error: str, retryable: bool
) -> None:
    """Slack's HTTP 200 {"ok": false} is a failure; only transient errors are retryable."""
    http_receiver.script("/api/chat.postMessage", Reply(body={"ok": False, "error": error}))
    result = await bot.send(ALERT, idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, retryable, 200)
    assert error in result.reason


async def test_bot_429_ratelimited_honours_retry_after(
    bot: SlackNotifier, http_receiver: HttpReceiver
) -> None:
    """The Web API's 429 with Retry-After is retryable after that delay."""
    http_receiver.script(
        "/api/chat.postMessage",
        Reply(status=429, headers={"Retry-After": "3"}, body={"ok": False, "error": "ratelimited"}),
    )
    result = await bot.send(ALERT, idempotency_key="k")
    assert (result.retryable, result.retry_after, result.status_code) == (True, 3.0, 429)
    assert "ratelimited" in result.reason


async def test_secrets_never_in_target_reason_or_logs(
    http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the bot token nor the webhook URL's secret appears anywhere we print."""
    bot = SlackNotifier(token=TOKEN, channel="C1", base_url=http_receiver.url("/api"))
    hook = SlackNotifier(webhook_url=http_receiver.url(HOOK_PATH))
    http_receiver.script(
        "/api/chat.postMessage", Reply(status=401, body={"ok": False, "error": "invalid_auth"})
    )
    http_receiver.script(HOOK_PATH, Reply(status=500, body="rollup_error"))
    with caplog.at_level(logging.DEBUG):
        results = [
            await bot.send(ALERT, idempotency_key="k"),
            await hook.send(ALERT, idempotency_key="k"),
        ]
        await bot.aclose()
        await hook.aclose()
    assert isinstance(bot, Notifier)
    assert isinstance(hook, Notifier)
    shown = " ".join(
        [bot.target, hook.target, repr(bot), repr(hook), caplog.text]
        + [f"{r.reason} {r.target}" for r in results]
    )
    assert "HTTP Request" in caplog.text
    assert TOKEN not in shown
    assert HOOK_SECRET not in shown
    assert not any(r.ok for r in results)


def test_exactly_one_mode() -> None:
    """A notifier is either a webhook or a bot with a channel."""
    with pytest.raises(ChannelConfigError):
        SlackNotifier()
    with pytest.raises(ChannelConfigError):
        SlackNotifier(webhook_url="https://hooks.slack.com/services/a/b/c", token=TOKEN)
    with pytest.raises(ChannelConfigError) as info:
        SlackNotifier(token=TOKEN)
    assert TOKEN not in str(info.value)
