"""Keeping secrets out of URLs we print and out of every log line.

Two tools, used together:

* ``mask_url`` renders a channel URL safe to show: passwords, token-shaped
  path segments of known webhook hosts, and secret-named query parameters
  become ``***``.
* ``Redactor`` remembers the secret strings themselves (resolved ``${ENV}``
  values, whole channel URLs and their secret parts) and scrubs them, and
  their percent-encoded and JSON-escaped forms, from every structlog event,
  whatever key they hide under, and from every failure reason before it is
  stored or emitted. ``configure_logging`` installs one once, at start-up, for
  structlog and the stdlib ``logging`` (Apprise logs through the stdlib).
* ``register_secrets`` / ``redact_secrets``: the process's own ``Redactor``,
  which ``notifiers.http`` applies to answer excerpts before they are cut to a
  reason's length (a secret cut in two would leak its first half). Channels
  register their credentials there; the service and the delivery worker
  register every secret of their config at start.
"""

from __future__ import annotations

import json as stdlib_json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "MASK",
    "Redactor",
    "configure_logging",
    "encoded_forms",
    "mask_url",
    "redact_secrets",
    "register_secrets",
    "secret_parts",
]

MASK = "***"

# Query parameter names whose values are secrets (compared lower-case, with
# "-" and "_" removed, so "api-key", "api_key" and "apiKey" all match).
_SECRET_PARAMS = frozenset(
    {
        "token",
        "accesstoken",
        "authtoken",
        "key",
        "apikey",
        "secret",
        "clientsecret",
        "password",
        "pass",
        "passwd",
        "pwd",
        "sig",
        "signature",
        "auth",
        "authorization",
        "code",
    }
)

# Known webhook shapes: host → number of leading path segments that are not
# secret. Everything after them is a credential.
#   https://hooks.slack.com/services/T000/B000/XXXX       (keep services, T, B)
#   https://discord.com/api/webhooks/<id>/<token>         (keep api, webhooks, id)
#   https://<org>.webhook.office.com/webhookb2/<guid>@<guid>/IncomingWebhook/<id>/<guid>
_WEBHOOK_PUBLIC_SEGMENTS: dict[str, int] = {
    "hooks.slack.com": 3,
    "discord.com": 3,
    "discordapp.com": 3,
    "chat.googleapis.com": 0,
}
_WEBHOOK_SUFFIXES: dict[str, int] = {".webhook.office.com": 1}

# A path segment that looks like a token: long and mixing letters and digits.
_TOKENISH = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-.~+=]{20,}$")
# Apprise-style URLs (slack://T/B/C, tgram://bot/chat) put tokens in the host
# and path, and their tokens are shorter: mixed letters and digits, 8+ chars.
_SHORT_TOKENISH = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-.~+=]{8,}$")

# Shorter strings would redact ordinary words out of every log line.
_MIN_SECRET_LEN = 4

# What encoders leave unescaped: nothing, a path's "/", or a query's characters
# (yarl, which aiohttp sends with, keeps these in a query and writes a space as "+").
_ENCODER_SAFE = ("", "/", "/?:@!$'()*,;=")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def encoded_forms(secret: str) -> set[str]:
    """``secret`` and the forms an echo of it may take: percent-encoded (``%20`` or
    ``+`` for a space, upper- or lower-case hex, with or without ``/`` and a query's
    characters escaped) and escaped inside a JSON string."""
    forms = {secret}
    for safe in _ENCODER_SAFE:
        forms.add(quote(secret, safe=safe))
        forms.add(quote_plus(secret, safe=safe))
    forms |= {_PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), form) for form in forms}
    forms.add(stdlib_json.dumps(secret)[1:-1])
    forms.add(stdlib_json.dumps(secret, ensure_ascii=False)[1:-1])
    return forms


def _looks_like_domain(host: str) -> bool:
    labels = host.split(".")
    return len(labels) > 1 and labels[-1].isalpha()


def _public_segments(host: str) -> int | None:
    if host in _WEBHOOK_PUBLIC_SEGMENTS:
        return _WEBHOOK_PUBLIC_SEGMENTS[host]
    for suffix, keep in _WEBHOOK_SUFFIXES.items():
        if host.endswith(suffix):
            return keep
    return None


def _is_secret_param(name: str) -> bool:
    return name.lower().replace("-", "").replace("_", "") in _SECRET_PARAMS


def _mask_and_collect(url: str) -> tuple[str, list[str]]:
    """Return the masked URL and the secret substrings that were hidden."""
    secrets: list[str] = []
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        # Unparseable: show nothing of it but its scheme, and treat it all as secret.
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return (f"{scheme}://{MASK}" if scheme else MASK), [url]

    web = parts.scheme.lower() in ("http", "https")
    tokenish = _TOKENISH if web else _SHORT_TOKENISH
    if not web and tokenish.match(host) and not _looks_like_domain(host):
        secrets.append(host)
        host = MASK
    netloc = host
    if port is not None:
        netloc = f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        user = parts.username or ""
        if parts.password:
            secrets.append(parts.password)
            netloc = f"{user}:{MASK}@{netloc}"
        else:
            netloc = f"{user}@{netloc}"

    segments = parts.path.split("/")
    keep = _public_segments(host)
    masked_segments: list[str] = []
    public_seen = 0
    for segment in segments:
        if not segment:
            masked_segments.append(segment)
            continue
        if keep is not None:
            secret = public_seen >= keep
            public_seen += 1
        else:
            secret = bool(tokenish.match(segment))
        if secret:
            secrets.append(segment)
            masked_segments.append(MASK)
        else:
            masked_segments.append(segment)

    query_pairs: list[str] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and _is_secret_param(name):
            secrets.append(value)
            query_pairs.append(f"{quote(name)}={MASK}")
        else:
            query_pairs.append(f"{quote(name)}={quote(value, safe='@:,')}")

    masked = urlunsplit(
        (parts.scheme, netloc, "/".join(masked_segments), "&".join(query_pairs), "")
    )
    if parts.fragment:
        secrets.append(parts.fragment)
        masked += f"#{MASK}"
    return masked, secrets


def mask_url(url: str) -> str:
    """Return ``url`` with its credentials replaced by ``***``; safe to print."""
    return _mask_and_collect(url)[0]


def secret_parts(url: str) -> list[str]:
    """The substrings of ``url`` that ``mask_url`` hides (passwords, tokens)."""
    return _mask_and_collect(url)[1]


class Redactor:
    """Remembers secret strings and replaces them with ``***`` wherever they appear.

    Thread-safe. Register values as soon as they are resolved (``add``), and
    channel URLs with ``add_url`` (the URL and each secret part of it). A secret
    is masked by value wherever it appears, in its own form or an encoded one
    (``encoded_forms``: a target echoing a query string sends it encoded).
    Strings shorter than 4 characters are ignored: redacting them would
    mangle ordinary words in every log line.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Register secret strings."""
        with self._lock:
            given = {s for s in secrets if len(s) >= _MIN_SECRET_LEN} - self._secrets
            fresh = {form for s in given for form in encoded_forms(s)} - self._secrets
            if not fresh:
                return
            self._secrets |= fresh
            # Longest first so a URL is replaced whole before its password is.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def add_url(self, url: str) -> None:
        """Register a channel URL and the secret parts ``mask_url`` would hide."""
        self.add(url, *secret_parts(url))

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        """Whether any secret is registered."""
        return self._pattern is not None

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._redact_value(k): self._redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return type(value)(self._redact_value(v) for v in value)
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        # Anything else (exceptions, URLs, models) is rendered later via str();
        # redact that rendering now so it cannot leak afterwards.
        text = str(value)
        redacted = self.redact(text)
        return value if redacted == text else redacted

    def redact_processor(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> EventDict:
        """structlog processor: scrub every value (and key) of the event."""
        if self._pattern is None:
            return event_dict
        return {self.redact(key): self._redact_value(value) for key, value in event_dict.items()}


# The process's secrets (see the module docstring): one registry, filled at start.
_PROCESS = Redactor()


def register_secrets(*secrets: str) -> None:
    """Register secrets with the process's ``Redactor`` (URLs with their secret parts)."""
    for secret in secrets:
        if "://" in secret:
            _PROCESS.add_url(secret)
        else:
            _PROCESS.add(secret)


def redact_secrets(text: str) -> str:
    """``text`` with every secret given to ``register_secrets`` replaced by ``***``."""
    return _PROCESS.redact(text)


class _RedactingFilter(logging.Filter):
    """Scrubs stdlib log records (Apprise and other libraries) before any handler."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            # Format the traceback now, redacted, so handlers reuse it verbatim.
            record.exc_text = self._redactor.redact(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        return True


def _json_line(value: Any, **_: Any) -> str:
    """One log line's JSON: orjson (a fifth of the stdlib's cost per line), the stdlib
    for what orjson refuses (integers past 64 bits); anything else as its ``repr``."""
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return stdlib_json.dumps(value, default=repr)


def configure_logging(
    redactor: Redactor, json: bool, *, stream: TextIO | None = None, level: str = "info"
) -> None:
    """Configure structlog and stdlib logging once, at start-up, with redaction.

    Every structlog event passes ``redactor.redact_processor`` after exception
    formatting and before rendering; stdlib records (Apprise logs there) are
    scrubbed by a filter on the root handler and rendered by the same chain.
    Calling again replaces the previous configuration (tests do this).
    """
    out = stream if stream is not None else sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redactor.redact_processor,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.set_name("runbell-redacting")
    handler.addFilter(_RedactingFilter(redactor))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "runbell-redacting":
            root.removeHandler(old)
    root.addHandler(handler)
