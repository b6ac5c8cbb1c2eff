"""Any Apprise URL as a ``Notifier``: one attempt, outcome translated to ``SendResult``."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import importlib
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import apprise
import requests

from notifiers.channel import is_retryable_status
from notifiers.errors import ChannelConfigError
from notifiers.http import elapsed_ms, retry_after_seconds
from notifiers.model import Message, SendResult

__all__ = ["AppriseNotifier"]

if sys.version_info < (3, 13):
    # Apprise's email plugin (loaded lazily, on the first URL parsed) imports
    # the stdlib ``imghdr`` for pgpy; Python 3.11/3.12 warn that it is
    # deprecated, which our warnings-as-errors turns into a failed URL parse.
    # Importing it once here, with that one warning silenced, keeps the
    # warning out of every later import. Remove with Python 3.13.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        importlib.import_module("imghdr")

# Apprise's HTTP plugins log failures as "... error=500." and expose no status
# code otherwise; this is the only place it can be read from.
_STATUS_IN_LOG = re.compile(r"\berror=(\d{3})\b")
_SOCKET_SLACK = 0.5
# Extra time beyond Apprise's own call deadline before we stop waiting for it.
_BACKSTOP_GRACE = 1.5

# Apprise's generic HTTP plugins, which send custom headers (``+Name=value``):
# these forward the idempotency key as an ``Idempotency-Key`` header.
_HTTP_FAMILY = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
IDEMPOTENCY_HEADER = "Idempotency-Key"

_FORMATS = {
    "text": apprise.NotifyFormat.TEXT,
    "markdown": apprise.NotifyFormat.MARKDOWN,
    "html": apprise.NotifyFormat.HTML,
}


class _UrlPartsScrubber(logging.Filter):
    """Scrubs the URL being parsed out of Apprise's log records, on this thread only.

    Apprise's privacy masking does not cover its parse errors: the Slack plugin
    logs ``An invalid Slack (first) Token (<token>) was specified.`` verbatim.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @contextmanager
    def scrubbing(self, url: str) -> Iterator[None]:
        self._local.parts = _url_parts(url)
        try:
            yield
        finally:
            self._local.parts = ()

    def filter(self, record: logging.LogRecord) -> bool:
        parts: tuple[str, ...] = getattr(self._local, "parts", ())
        if parts:
            text = record.getMessage()
            for part in parts:
                text = text.replace(part, "***")
            record.msg, record.args = text, None
        return True


def _url_parts(url: str) -> tuple[str, ...]:
    """Every piece of a URL but its scheme, longest first (all may be credentials)."""
    rest = url.partition("://")[2]
    pieces = {rest, url}
    for piece in re.split(r"[/@:?&=#]", rest):
        pieces.update({piece, unquote(piece)})
    return tuple(sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True))


_scrubber = _UrlPartsScrubber()
logging.getLogger("apprise").addFilter(_scrubber)

# The HTTP answers the plugin received during one ``_notify`` call: (status, the
# Retry-After and Date headers). Apprise's result is a status and log lines only,
# and its plugins keep the ``requests`` response in a local; they all send through
# ``requests.Session.send`` (``requests.post`` and friends make a Session per call),
# in our thread or, with a deadline, in Apprise's pool under a copy of our context,
# so a context variable reaches them. Outside a ``_notify`` call it is None and the
# wrapper only passes the call through.
_Answer = tuple[int, dict[str, str]]
_answers: contextvars.ContextVar[list[_Answer] | None] = contextvars.ContextVar(
    "runbell_apprise_answers", default=None
)
_KEPT_HEADERS = ("Retry-After", "Date")


def _capture_answers() -> None:
    """Wrap ``requests.Session.send`` once so a ``_notify`` call sees its answers."""
    send = requests.Session.send
    if getattr(send, "_runbell_captures", False):
        return

    def capturing_send(
        self: requests.Session, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        response = send(self, request, **kwargs)
        sink = _answers.get()
        if sink is not None:
            kept = {h: v for h in _KEPT_HEADERS if (v := response.headers.get(h)) is not None}
            sink.append((response.status_code, kept))
        return response

    capturing_send._runbell_captures = True  # type: ignore[attr-defined]  # idempotence mark
    setattr(requests.Session, "send", capturing_send)  # noqa: B010  # mypy: no method assignment


_capture_answers()


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ChannelConfigError(
            "channel URL is not a URL (expected scheme://...); see https://appriseit.com/services/"
        )
    return scheme.lower()


class AppriseNotifier:
    """Delivers to one Apprise URL (``slack://``, ``mailto://``, ``json://``, ...).

    The URL is validated at construction (``ChannelConfigError`` names only
    the scheme). Apprise's own retries (``?retry=N``) and client-side
    throttling are switched off: the delivery pipeline owns both. Each
    ``send`` runs Apprise in a worker thread with Apprise's call deadline set
    to ``timeout`` seconds (the URL's own ``cto``/``rto`` are overridden to
    just above it), and an asyncio backstop 1.5 s later.

    Apprise reports no HTTP status and no ``Retry-After``: both are read from
    the HTTP answers its plugin received (``requests.Session.send`` is wrapped
    once, inert outside a send), the status code else from Apprise's failure
    log line (``error=404``); a failure without one is treated as retryable.
    ``Retry-After`` is passed on for a retryable status (429, 503, ...). Plugins
    that speak no HTTP (email, XMPP, ...) or use another HTTP client have none.

    For the generic HTTP schemes (``json``, ``form``, ``xml`` and their ``s``
    variants) the idempotency key is sent as an ``Idempotency-Key`` header,
    so a receiver can drop an in-doubt redelivery. Each such send uses a
    shallow copy of the configured plugin with its own header dict (about
    30 µs, against ~175 µs for re-parsing the URL with ``+Idempotency-Key=``).
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        scheme = _scheme(url)
        asset = apprise.AppriseAsset(secure_logging=True)
        try:
            with _scrubber.scrubbing(url):
                plugin = apprise.Apprise.instantiate(url, asset=asset, suppress_exceptions=True)
        except Exception as exc:  # Apprise validates inside plugin constructors
            raise ChannelConfigError(
                f"channel URL with scheme {scheme!r} is invalid ({type(exc).__name__})"
            ) from None
        if plugin is None:
            raise ChannelConfigError(
                f"channel URL with scheme {scheme!r} is unsupported or malformed; "
                "check it against https://appriseit.com/services/"
            )
        # One attempt per send, no client-side sleeping: retry and rate limit
        # are pipeline stages, and a hidden sleep would eat the send timeout.
        plugin.retry = 0
        plugin.request_rate_per_sec = 0
        # Apprise's call deadline (``notify(timeout=...)``) reports TIMEOUT, but
        # only if the plugin's own socket timeouts do not fire first: those
        # surface as a bare "Connection error". So sockets get a little longer
        # than the deadline, which still bounds the abandoned worker thread.
        plugin.socket_connect_timeout = timeout + _SOCKET_SLACK
        plugin.socket_read_timeout = timeout + _SOCKET_SLACK

        self._timeout = timeout
        self._asset = asset
        # Any: ``headers`` exists only on the HTTP-family plugins, not on NotifyBase.
        self._plugin: Any = plugin
        self._keyed = scheme in _HTTP_FAMILY
        self._apprise = apprise.Apprise(asset=asset)
        self._apprise.add(plugin)
        # The privacy URL minus its query, which is Apprise's option noise
        # (retry=0&wait=0.5&...) and the likeliest place for a stray secret.
        privacy_url = plugin.url(privacy=True)  # type: ignore[no-untyped-call]  # untyped in apprise
        self._target: str = str(privacy_url).split("?", 1)[0]

    @property
    def target(self) -> str:
        """Masked channel URL, e.g. ``json://user:****@host/path``."""
        return self._target

    def __repr__(self) -> str:
        return f"AppriseNotifier({self._target!r})"

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        """One delivery attempt; the key becomes an ``Idempotency-Key`` header on HTTP schemes.

        Other schemes have no slot for it and ignore it.
        """
        started = time.perf_counter()
        if not message.body.strip():  # Apprise refuses it; a retry would refuse it again
            return self._failed(started, "the message body is empty", retryable=False)
        target = self._keyed_apprise(idempotency_key) if self._keyed else self._apprise
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._notify, target, message, started),
                self._timeout + _BACKSTOP_GRACE,
            )
        except TimeoutError:
            return self._failed(started, f"timed out after {self._timeout:g}s", retryable=True)
        except Exception as exc:  # a plugin bug must not escape as an exception
            return self._failed(started, f"apprise raised {type(exc).__name__}", retryable=True)

    def _keyed_apprise(self, idempotency_key: str) -> apprise.Apprise:
        # A copy per send, never a mutation of the shared plugin: concurrent
        # sends run in different threads and each must carry its own key.
        plugin = copy.copy(self._plugin)
        plugin.headers = {**self._plugin.headers, IDEMPOTENCY_HEADER: idempotency_key}
        keyed = apprise.Apprise(asset=self._asset)
        keyed.add(plugin)
        return keyed

    def _notify(self, target: apprise.Apprise, message: Message, started: float) -> SendResult:
        answers: list[_Answer] = []
        token = _answers.set(answers)
        try:
            result = target.notify(
                body=message.body,
                title=message.subject,
                body_format=_FORMATS[message.format],
                timeout=self._timeout,
            )
        finally:
            _answers.reset(token)
        with result:
            status = result.status
            lines = [entry.message for entry in result.logs()]
        if status == apprise.AppriseResultStatus.SUCCESS:
            return SendResult.success(self._target, elapsed_ms(started))
        if status == apprise.AppriseResultStatus.TIMEOUT:
            return self._failed(started, f"timed out after {self._timeout:g}s", retryable=True)
        reason = lines[-1] if lines else f"apprise reported {status.name} without a reason"
        # A plugin may send more than once (chunks, lookups): the failing answers count.
        failed = [(code, headers) for code, headers in list(answers) if code >= 400]
        code = failed[-1][0] if failed else _status_code(lines)
        retryable = True if code is None else is_retryable_status(code)
        asked = [wait for _, headers in failed if (wait := _retry_after(headers)) is not None]
        return self._failed(
            started,
            reason,
            retryable=retryable,
            status_code=code,
            retry_after=max(asked) if asked and retryable else None,
        )

    def _failed(
        self,
        started: float,
        reason: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> SendResult:
        return SendResult.failure(
            self._target,
            elapsed_ms(started),
            reason=reason,
            retryable=retryable,
            status_code=status_code,
            retry_after=retry_after,
        )


def _retry_after(headers: dict[str, str]) -> float | None:
    # A malformed header (e.g. two Date values joined by requests) costs the hint,
    # never the failure's status code.
    try:
        return retry_after_seconds(headers)
    except (TypeError, ValueError):
        return None


def _status_code(lines: list[str]) -> int | None:
    for line in reversed(lines):
        match = _STATUS_IN_LOG.search(line)
        if match:
            return int(match.group(1))
    return None
