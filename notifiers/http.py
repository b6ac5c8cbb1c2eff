"""The one outbound HTTP client: every request runbell makes to a target goes through here.

Slack, the webhook channel, ``call-webhook`` and the orchestrator adapters all send
with :class:`HttpClient` (aiohttp underneath, chosen by ``bench/http_clients.py``:
see ``bench/README.md``). aiohttp's exceptions and status codes never leave this
module: :meth:`HttpClient.request` answers every request with a :class:`Reply` whose
``result`` is a :class:`~notifiers.model.SendResult`:

* 2xx: ``ok``;
* 5xx, 429, 408, 425: retryable, with the target's ``Retry-After``;
* other 4xx, and 3xx (redirects are never followed): not retryable;
* timeouts and connection errors: retryable; an invalid URL or request: not.

One deadline (``timeout``) covers waiting for a pooled connection, connecting,
sending and reading the whole answer. Connections are kept alive (at most 16 per
host, 100 in all); proxies come from the environment (``HTTPS_PROXY``,
``HTTP_PROXY``, ``NO_PROXY``), as httpx's ``trust_env`` does; no cookies are kept.
Reasons never quote a URL or an exception message (they can hold credentials);
answer excerpts are scrubbed, before they are cut, of every secret given to
:func:`register_secrets` and of the request's own (its URL's secret parts and its
header values), in their plain and encoded forms.
Nothing is logged but, at DEBUG, ``HTTP Request: <method> <masked url> <status>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import orjson

from notifiers.channel import is_retryable_status
from notifiers.model import SendResult
from notifiers.secrets import Redactor, mask_url, redact_secrets, register_secrets, secret_parts

__all__ = [
    "HttpClient",
    "Reply",
    "elapsed_ms",
    "register_secrets",
    "retry_after_seconds",
]

log = logging.getLogger("runbell.http")

# Longest answer excerpt quoted in a failure reason.
_EXCERPT = 200
# How much of a failed answer is scrubbed before the excerpt is cut from it: a secret
# must be masked whole before the cut, or its first half would be quoted.
_SCRUBBED = 64 * 1024
# Request headers whose values are not secret (and that an echo quotes usefully).
_PUBLIC_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "idempotency-key", "user-agent"}
)
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_PROXY_CACHE_MAX = 1024


def _request_secrets(url: str, headers: Mapping[str, str]) -> Redactor:
    """One request's own secrets, masked by value wherever an answer echoes them: the
    secret parts of its URL (a templated URL may carry a token from event data) and
    its header values (``Bearer <token>`` also as the token alone)."""
    values = [v for k, v in headers.items() if k.lower() not in _PUBLIC_HEADERS]
    redactor = Redactor(secret_parts(url))
    redactor.add(*values, *(v.partition(" ")[2] for v in values if " " in v))
    return redactor


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds: delta-seconds, or an HTTP-date measured against ``Date``.

    The HTTP-date form is measured against the answer's own ``Date`` header,
    so no local clock is read (and skew between the hosts cancels out);
    without ``Date`` it is ignored.
    """
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        now = parsedate_to_datetime(headers["Date"])
        # Inside the try: one side without a zone (a doubled or odd header) cannot be
        # subtracted from the other, and that is no Retry-After, not an error.
        return max(0.0, (when - now).total_seconds())
    except (KeyError, TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """What one request came to: its ``result``, and the answer when there was one.

    ``headers`` (case-insensitive) and ``body`` are empty when no answer came.
    """

    result: SendResult
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS, hash=False)
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def failure(self, reason: str, *, retryable: bool) -> SendResult:
        """A failure for an answer whose status said success but whose body did not."""
        return SendResult.failure(
            self.result.target,
            self.result.latency_ms,
            reason=reason,
            retryable=retryable,
            status_code=self.result.status_code,
            retry_after=retry_after_seconds(self.headers),
        )


class HttpClient:
    """Pooled keep-alive connections and the one request function; see the module docstring.

    ``timeout`` (seconds) is the default deadline per request; ``headers`` go with
    every request, and their values are registered as secrets. The underlying session is
    opened on first use, in the running event loop; call ``aclose()`` when done.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        user_agent: str = "runbell",
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        values = (headers or {}).values()
        # "Bearer <token>": an answer may quote the token alone.
        register_secrets(*values, *(v.partition(" ")[2] for v in values if " " in v))
        self._headers = {"User-Agent": user_agent, **(headers or {})}
        self._deadline = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        target: str,
        what: str,
        content: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        started: float | None = None,
    ) -> Reply:
        """Send one request; never raises for an outcome.

        ``target`` (masked) goes into the result; ``what`` names the other side in
        reasons (``"<what> answered HTTP 503: <excerpt>"``). ``json`` is encoded
        as the body (``Content-Type: application/json`` unless given);
        ``started`` (a ``perf_counter`` reading) lets a caller's latency span
        several requests.
        """
        started = time.perf_counter() if started is None else started
        deadline = self.timeout if timeout is None else timeout
        sent = dict(headers) if headers else {}
        data = content
        if json is not None:
            try:
                data = orjson.dumps(json, option=orjson.OPT_NON_STR_KEYS)
            except TypeError as exc:
                return self._failed(target, started, f"request body is not JSON: {exc}", False)
            sent.setdefault("Content-Type", "application/json")
        try:
            async with self._open().request(
                method,
                url,
                data=data,
                headers=sent,
                allow_redirects=False,
                proxy=self._proxy(url),
                timeout=self._deadline if timeout is None else aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await response.read()
        except TimeoutError:  # aiohttp's own timeouts subclass it too
            return self._failed(target, started, f"timed out after {deadline:g}s", True)
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
            return self._failed(target, started, "the URL is not a valid http(s) URL", False)
        except (aiohttp.ClientError, OSError) as exc:
            # Named by type only: aiohttp's messages quote hosts and URLs.
            return self._failed(target, started, f"connection failed ({type(exc).__name__})", True)
        except ValueError as exc:  # a header value with a line break, or not Latin-1
            return self._failed(target, started, f"invalid request ({type(exc).__name__})", False)
        code = response.status
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HTTP Request: %s %s %d", method, mask_url(url), code)
        headers_in = response.headers
        if 200 <= code < 300:
            result = SendResult.success(
                target, elapsed_ms(started), reason=f"{what} answered HTTP {code}", status_code=code
            )
        else:
            reason = f"{what} answered HTTP {code}"
            # Scrubbed whole, then cut: registered secrets and this request's own.
            answer = redact_secrets(body[:_SCRUBBED].decode("utf-8", "replace"))
            excerpt = _request_secrets(url, sent).redact(answer)[:_EXCERPT].strip()
            if excerpt:
                reason += f": {excerpt}"
            result = SendResult.failure(
                target,
                elapsed_ms(started),
                reason=reason,
                retryable=is_retryable_status(code),
                status_code=code,
                retry_after=retry_after_seconds(headers_in),
            )
        return Reply(result, headers_in, body)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _proxy(self, url: str) -> str | None:
        """The environment's proxy for ``url``, looked up once per URL.

        aiohttp's ``trust_env`` does this lookup (and a ``.netrc`` read) in a worker
        thread on every request: two thread hand-offs that cost more than the request.
        """
        try:
            return self._proxies[url]
        except KeyError:
            pass
        parts = urlsplit(url)
        proxies = getproxies()
        proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
        if proxy and parts.hostname and proxy_bypass(parts.hostname):
            proxy = None
        if len(self._proxies) < _PROXY_CACHE_MAX:
            self._proxies[url] = proxy or None
        return proxy or None

    def _open(self) -> aiohttp.ClientSession:
        """The session of the running loop (a session belongs to the loop it was made in)."""
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            self._loop = loop
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, limit_per_host=16),
                headers=self._headers,
                timeout=self._deadline,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    @staticmethod
    def _failed(target: str, started: float, reason: str, retryable: bool) -> Reply:
        return Reply(
            SendResult.failure(target, elapsed_ms(started), reason=reason, retryable=retryable)
        )
