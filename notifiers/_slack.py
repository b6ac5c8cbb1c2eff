"""Slack as a first-class channel: Block Kit alerts, webhook and bot-token modes, threaded resolves.

Layout of every message (the payload is the same in both modes)::

    text          plain-text fallback: subject + body (notifications, old clients)
    blocks        one section: the subject in bold, linked to ``url`` when given
    attachments   one attachment: ``color`` = the state's colour bar, and blocks:
                  summary or body · fields (state, run, flow, deployment, work pool, duration,
                  since) · context (event, automation) · URL buttons (Open, Retry)

The structured parts come from ``Message.attributes``; the keys are the ones
``notifiers.messages.default_message`` fills (see ``notifiers/CONTRACTS.md``).
Missing keys are simply left out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from notifiers.errors import ChannelConfigError
from notifiers.http import HttpClient, elapsed_ms, register_secrets
from notifiers.model import Message, SendResult
from notifiers.secrets import mask_url

__all__ = ["SlackNotifier", "slack_payload"]

DEFAULT_BASE_URL = "https://slack.com/api"

# Slack Web API ``error`` values worth another attempt; everything else
# (invalid_auth, channel_not_found, not_in_channel, ...) needs a person.
_RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

_RED, _AMBER, _GREEN, _BLUE, _GREY = "#E01E5A", "#ECB22E", "#2EB67D", "#36C5F0", "#9E9EA6"
# By state name first (Prefect's names), then by state type.
_STATE_COLOURS = {
    "failed": _RED,
    "crashed": _RED,
    "timedout": _RED,
    "late": _AMBER,
    "paused": _AMBER,
    "awaitingretry": _AMBER,
    "retrying": _AMBER,
    "suspended": _AMBER,
    "cancelling": _GREY,
    "cancelled": _GREY,
    "completed": _GREEN,
    "cached": _GREEN,
    "running": _BLUE,
    "pending": _BLUE,
    "scheduled": _BLUE,
}

_FIELDS = (
    ("state", "State"),
    ("run", "Run"),
    ("flow", "Flow"),
    ("deployment", "Deployment"),
    ("work_pool", "Work pool"),
    ("duration", "Duration"),
    ("since", "Since"),
)
_JSON = MappingProxyType({"Content-Type": "application/json"})
_JSON_UTF8 = MappingProxyType({"Content-Type": "application/json; charset=utf-8"})
# Slack's limits: section text 3000 chars, field 2000, fallback text kept short.
_SECTION_MAX = 3000
_FIELD_MAX = 2000


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``), per Slack's formatting docs."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def state_colour(attributes: Mapping[str, str]) -> str:
    """The attachment colour: an explicit ``color``, green when resolved, else by state."""
    if attributes.get("color"):
        return attributes["color"]
    if attributes.get("resolved") == "true":
        return _GREEN
    for key in ("state", "state_type"):
        colour = _STATE_COLOURS.get(attributes.get(key, "").lower().replace(" ", ""))
        if colour:
            return colour
    return _GREY


def slack_payload(message: Message) -> dict[str, Any]:
    """The Block Kit payload for ``message`` (without ``channel``/``ts``)."""
    attrs = message.attributes
    url = attrs.get("url", "")
    subject = _escape(message.subject)
    title = f"*<{url}|{subject}>*" if url else f"*{subject}*"
    detail: list[dict[str, Any]] = []
    # ``summary`` (set by default messages, whose body repeats the fields) wins over the body.
    text = attrs.get("summary", message.body)
    if text:
        detail.append(_mrkdwn_section(_cut(_escape(text), _SECTION_MAX)))
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_escape(attrs[key])}", _FIELD_MAX)}
        for key, label in _FIELDS
        if attrs.get(key)
    ]
    if fields:
        detail.append({"type": "section", "fields": fields})
    context = [
        f"{label}: {_escape(attrs[key])}"
        for key, label in (("event", "Event"), ("automation", "Automation"))
        if attrs.get(key)
    ]
    if context:
        detail.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
        )
    buttons = []
    if url:
        buttons.append(_button(attrs.get("url_label") or "Open", url, "open", primary=True))
    if attrs.get("retry_url"):
        buttons.append(_button("Retry", attrs["retry_url"], "retry", primary=False))
    if buttons:
        detail.append({"type": "actions", "elements": buttons})
    fallback = _cut(f"{message.subject}\n{message.body}".strip(), _SECTION_MAX)
    return {
        "text": fallback,
        "blocks": [_mrkdwn_section(_cut(title, _SECTION_MAX))],
        "attachments": [{"color": state_colour(attrs), "fallback": fallback, "blocks": detail}],
    }


def _mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(label: str, url: str, action_id: str, *, primary: bool) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "url": url,
        "action_id": action_id,
    }
    if primary:
        button["style"] = "primary"
    return button


class SlackNotifier:
    """Posts Block Kit alerts to Slack, by incoming webhook or as a bot.

    Exactly one mode:

    * ``webhook_url=`` (incoming webhook): posts to the URL as given. Slack
      answers ``ok`` or an HTTP error (``invalid_payload``, ``channel_not_found``).
      ``send`` returns no ``ref``; ``resolve`` just sends a new message.
    * ``token=`` + ``channel=`` (bot token, ``chat:write``): calls
      ``{base_url}/chat.postMessage`` with ``Authorization: Bearer``. Slack
      answers HTTP 200 with ``{"ok": false, "error": ...}`` for most failures:
      ``ratelimited`` and Slack-side errors are retryable, the rest
      (``invalid_auth``, ``channel_not_found``, ...) are not. ``send`` returns
      ``ref={"channel": <channel id>, "ts": <message ts>}``.

    HTTP 429 is retryable with ``Retry-After`` honoured, 5xx retryable, other
    4xx not; timeouts and connection errors retryable. Slack has no
    idempotency key: ``idempotency_key`` is not forwarded (the delivery
    pipeline dedups before sending). The token and webhook URL never appear
    in ``target``, reasons or logs. One :class:`~notifiers.http.HttpClient` per
    notifier: call ``aclose()`` when done.
    """

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        token: str | None = None,
        channel: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if (webhook_url is None) == (token is None):
            raise ChannelConfigError("slack needs exactly one of webhook_url or token (+ channel)")
        if token is not None and not channel:
            raise ChannelConfigError("slack bot-token mode needs a channel")
        self._webhook_url = webhook_url
        self._token = token
        self._channel = channel or ""
        self._base_url = base_url.rstrip("/")
        if webhook_url is not None:
            register_secrets(webhook_url)
            self._target = f"slack webhook {mask_url(webhook_url)}"
        else:
            assert token is not None
            register_secrets(token)
            self._target = f"slack bot {mask_url(self._base_url)} channel={self._channel}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = HttpClient(timeout=timeout, headers=headers)

    @property
    def target(self) -> str:
        """Mode and masked address, e.g. ``slack bot https://slack.com/api channel=C123``."""
        return self._target

    def __repr__(self) -> str:
        return f"SlackNotifier({self._target!r})"

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        """Post ``message`` once; in bot mode the result's ``ref`` names the posted message."""
        payload = slack_payload(message)
        if self._webhook_url is not None:
            return await self._post_webhook(payload)
        return await self._call("chat.postMessage", {"channel": self._channel, **payload})

    async def resolve(
        self, ref: Mapping[str, str] | None, message: Message, *, idempotency_key: str
    ) -> SendResult:
        """Say that the alert ``ref`` points at has cleared; one attempt, safe to retry.

        Bot mode with a ``ref`` from an earlier ``send``: first ``chat.update``
        replaces the original alert with ``message`` (green when
        ``message.attributes["resolved"] == "true"``), then ``chat.postMessage``
        with ``thread_ts`` replies with it in the alert's thread. The update
        goes first because repeating it is harmless: a retry after a failed
        reply does not leave two replies behind an un-updated alert. The
        result's ``ref`` is the reply's. Without a ``ref`` (or in webhook
        mode, where Slack offers neither) this is a plain ``send``.
        """
        if self._webhook_url is not None or not ref or not ref.get("ts"):
            return await self.send(message, idempotency_key=idempotency_key)
        channel = ref.get("channel") or self._channel
        payload = slack_payload(message)
        started = time.perf_counter()
        updated = await self._call("chat.update", {"channel": channel, "ts": ref["ts"], **payload})
        if not updated.ok:
            return updated
        reply = await self._call(
            "chat.postMessage", {"channel": channel, "thread_ts": ref["ts"], **payload}
        )
        return dataclasses.replace(reply, latency_ms=elapsed_ms(started))

    async def _post_webhook(self, payload: dict[str, Any]) -> SendResult:
        assert self._webhook_url is not None
        reply = await self._client.request(
            "POST",
            self._webhook_url,
            target=self._target,
            what="slack webhook",
            content=orjson.dumps(payload),
            headers=_JSON,
        )
        return reply.result

    async def _call(self, method: str, body: dict[str, Any]) -> SendResult:
        reply = await self._client.request(
            "POST",
            f"{self._base_url}/{method}",
            target=self._target,
            what=f"slack {method}",
            content=orjson.dumps(body),
            headers=_JSON_UTF8,
        )
        result = reply.result
        if not result.ok:  # no answer, or not 2xx
            return result
        answer = reply.json()
        if not isinstance(answer, dict):
            return reply.failure(
                f"slack {method} answered HTTP {result.status_code} without JSON", retryable=True
            )
        if not answer.get("ok"):
            error = str(answer.get("error") or "unknown_error")
            return reply.failure(
                f"slack {method} error: {error}", retryable=error in _RETRYABLE_ERRORS
            )
        ref = {
            "channel": str(answer.get("channel") or body["channel"]),
            "ts": str(answer.get("ts") or body.get("ts", "")),
        }
        return dataclasses.replace(result, ref=ref)
