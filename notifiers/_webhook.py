"""A generic JSON webhook channel, optionally signed (Stripe-style HMAC-SHA256).

Request::

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <key>                      same key on every retry of one intent
    Runbell-Signature: t=<unix seconds>,v1=<hex> only when a secret is configured

    {"subject": ..., "body": ..., "format": "text", "attributes": {...},
     "idempotency_key": <key>}

Verifying ``Runbell-Signature`` (receivers)::

    t, v1 = the values of "t=" and "v1=" in the header
    expected = hex(HMAC_SHA256(key=secret (UTF-8), msg=t + "." + raw request body))
    accept iff hmac.compare_digest(expected, v1) and |now - t| <= 300 s

Sign the raw bytes as received, before any JSON parsing. The timestamp is
signed with the body, so an old request replayed later fails the age check;
dedup redeliveries on ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

from notifiers.errors import ChannelConfigError
from notifiers.http import HttpClient, register_secrets
from notifiers.model import Message, SendResult
from notifiers.secrets import mask_url

__all__ = ["SIGNATURE_HEADER", "WebhookNotifier", "sign"]

SIGNATURE_HEADER = "Runbell-Signature"
_METHODS = frozenset({"POST", "PUT", "PATCH"})
_USER_AGENT = "runbell-notifier/0.1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Runbell-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookNotifier:
    """Sends a message as JSON to any HTTP endpoint; a non-2xx answer is a failure.

    5xx, 429 and 408 are retryable (``Retry-After`` is passed on), other
    4xx and 3xx are not (redirects are not followed), timeouts and connection
    errors are retryable. ``headers`` values are treated as secrets (they
    usually carry an ``Authorization``); ``clock`` (unix seconds) stamps the
    signature and exists for tests. One :class:`~notifiers.http.HttpClient` per
    notifier: call ``aclose()`` when done.
    """

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        scheme = url.partition("://")[0].lower()
        if scheme not in ("http", "https"):
            raise ChannelConfigError(f"webhook URL must be http(s), not {scheme or 'no scheme'!r}")
        if method.upper() not in _METHODS:
            raise ChannelConfigError(f"webhook method must be one of {sorted(_METHODS)}")
        self._url = url
        self._method = method.upper()
        self._secret = secret
        self._clock = clock
        self._headers = dict(headers or {})
        register_secrets(url, *(headers or {}).values(), *([secret] if secret else []))
        self._target = f"{self._method} {mask_url(url)}"
        self._client = HttpClient(timeout=timeout, user_agent=_USER_AGENT)

    @property
    def target(self) -> str:
        """Method and masked URL, e.g. ``POST https://example.com/hooks/***``."""
        return self._target

    def __repr__(self) -> str:
        return f"WebhookNotifier({self._target!r})"

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        """POST the message once; the key travels as ``Idempotency-Key`` and in the body."""
        body = json.dumps(
            {
                "subject": message.subject,
                "body": message.body,
                "format": message.format,
                "attributes": dict(message.attributes),
                "idempotency_key": idempotency_key,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, int(self._clock()), body)
        reply = await self._client.request(
            self._method,
            self._url,
            target=self._target,
            what="webhook",
            content=body,
            headers=headers,
        )
        return reply.result
