"""What the httpx-based channels (Slack, webhook) share: outcomes, Retry-After, log scrubbing."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from notifiers._lean_http import HttpError, HttpTimeout, UnsupportedUrl
from notifiers.channel import is_retryable_status
from notifiers.model import SendResult
from notifiers.secrets import Redactor

__all__ = [
    "elapsed_ms",
    "exception_result",
    "register_secrets",
    "response_result",
    "retry_after_seconds",
    "status_failure",
]

# httpx logs every request at INFO with its full URL ("HTTP Request: POST
# https://hooks.slack.com/services/T/B/<secret> ..."): a webhook URL *is* the
# credential. Every secret a channel is built with is registered here and
# scrubbed from httpx's records before any handler sees them, whether or not
# the application called ``configure_logging``.
_SECRETS = Redactor()

# httpcore scans every pooled connection on each request: a small pool keeps
# that cheap, and one target rarely gains from more parallel connections.
POOL_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=16)


class _HttpxScrubber(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        scrubbed = _SECRETS.redact(text)
        if scrubbed != text:
            record.msg, record.args = scrubbed, None
        return True


logging.getLogger("httpx").addFilter(_HttpxScrubber())


class Answer(Protocol):
    """What the failure helpers read from a response (``httpx`` or the lean client's)."""

    @property
    def status_code(self) -> int: ...

    @property
    def is_success(self) -> bool: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def text(self) -> str: ...


# Longest body excerpt quoted in a failure reason.
_EXCERPT = 200


def register_secrets(*secrets: str) -> None:
    """Remember secrets for the httpx log scrubber (URLs are split into their secret parts too)."""
    for secret in secrets:
        if "://" in secret:
            _SECRETS.add_url(secret)
        else:
            _SECRETS.add(secret)


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def retry_after_seconds(response: Answer) -> float | None:
    """``Retry-After`` in seconds: delta-seconds, or an HTTP-date measured against ``Date``.

    The HTTP-date form is measured against the response's own ``Date`` header,
    so no local clock is read (and skew between the hosts cancels out);
    without ``Date`` it is ignored.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        now = parsedate_to_datetime(response.headers["Date"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return max(0.0, (when - now).total_seconds())


def status_failure(
    target: str, started: float, response: Answer, what: str, detail: str = ""
) -> SendResult:
    """A non-2xx answer: retryable for 5xx/429/408/425, with ``Retry-After`` when given."""
    code = response.status_code
    reason = f"{what} answered HTTP {code}"
    excerpt = detail or response.text[:_EXCERPT].strip()
    if excerpt:
        reason += f": {excerpt}"
    return SendResult.failure(
        target,
        elapsed_ms(started),
        reason=_SECRETS.redact(reason),
        retryable=is_retryable_status(code),
        status_code=code,
        retry_after=retry_after_seconds(response),
    )


def response_result(target: str, started: float, response: Answer, what: str) -> SendResult:
    """A 2xx answer is a delivery; anything else is :func:`status_failure`."""
    if response.is_success:
        return SendResult.success(target, elapsed_ms(started), status_code=response.status_code)
    return status_failure(target, started, response, what)


def exception_result(target: str, started: float, exc: Exception, timeout: float) -> SendResult:
    """Translate an httpx or lean-client exception: timeouts and transport errors are
    retryable.

    The reason names the exception type only; httpx messages can quote URLs.
    """
    if isinstance(exc, HttpTimeout):
        reason = f"timed out after {timeout:g}s"
        retryable = True
    elif isinstance(exc, HttpError):
        reason = str(exc)
        retryable = not isinstance(exc, UnsupportedUrl)
    elif isinstance(exc, httpx.TimeoutException):
        reason = f"timed out after {timeout:g}s ({type(exc).__name__})"
        retryable = True
    elif isinstance(exc, httpx.TransportError):
        reason = f"connection failed ({type(exc).__name__})"
        retryable = not isinstance(exc, httpx.UnsupportedProtocol)
    else:
        reason = f"request failed ({type(exc).__name__})"
        retryable = False
    return SendResult.failure(target, elapsed_ms(started), reason=reason, retryable=retryable)
