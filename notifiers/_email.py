"""Email over SMTP: one multipart/alternative message (text + HTML) per send.

Uses the stdlib ``smtplib`` in a worker thread (no extra dependency), with a
socket timeout per SMTP step and an asyncio backstop on the whole exchange.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from html.parser import HTMLParser

from notifiers.http import elapsed_ms
from notifiers.model import Message, SendResult
from notifiers.secrets import Redactor

__all__ = ["EmailNotifier"]

# Time beyond ``timeout`` before the backstop stops waiting for the SMTP thread.
_BACKSTOP_GRACE = 1.0


class _TextExtractor(HTMLParser):
    """HTML to readable text for the text/plain part of an HTML message."""

    _BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_to_text(source: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(source)
    extractor.close()
    lines = (line.strip() for line in "".join(extractor.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _text_to_html(text: str) -> str:
    return (
        '<html><body><pre style="font-family: sans-serif; white-space: pre-wrap">'
        f"{html.escape(text)}</pre></body></html>"
    )


class EmailNotifier:
    """Sends each message as an email with a text and an HTML part.

    ``format="html"`` bodies are the HTML part and are reduced to text for the
    other part; text and markdown bodies are the text part and are escaped
    into ``<pre>`` for the HTML part. ``Message.attributes["url"]``, when set,
    is appended to both parts as a link.

    Outcomes: SMTP 4xx replies (greylisting, ``421`` busy, ``452`` full) are
    retryable, 5xx (``550`` no such user, ``535`` bad credentials) are not;
    connection errors, disconnects and timeouts are retryable. When some
    recipients are refused but others accepted, the send counts as delivered
    (a retry would duplicate it for the others) and the reason names the
    refused ones. The ``Message-ID`` is derived from the idempotency key, so
    mail systems and people can spot a duplicate.

    ``starttls`` upgrades a plain connection; ``implicit_tls`` connects with
    TLS from the start (port 465). The password never appears in ``target``
    or reasons. ``clock`` (unix seconds) stamps the ``Date`` header.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        implicit_tls: bool = False,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not recipients:
            raise ValueError("email needs at least one recipient")
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = list(recipients)
        self._username = username
        self._password = password
        self._starttls = starttls
        self._implicit_tls = implicit_tls
        self._timeout = timeout
        self._clock = clock
        self._redactor = Redactor([password] if password else [])
        user = f"{username}@" if username else ""
        scheme = "smtps" if implicit_tls else "smtp"
        self._target = f"{scheme}://{user}{host}:{port} to {', '.join(self._recipients)}"

    @property
    def target(self) -> str:
        """Server and recipients, e.g. ``smtp://alerts@mail:587 to ops@example.com``."""
        return self._target

    def __repr__(self) -> str:
        return f"EmailNotifier({self._target!r})"

    async def aclose(self) -> None:
        """Nothing to close (one SMTP connection per send); here for a uniform channel API."""

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        """Deliver once over a fresh SMTP connection; never raises for a delivery outcome."""
        email = self.build(message, idempotency_key=idempotency_key)
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._deliver, email, started),
                self._timeout + _BACKSTOP_GRACE,
            )
        except TimeoutError:
            return self._failed(started, f"timed out after {self._timeout:g}s", retryable=True)

    def build(self, message: Message, *, idempotency_key: str) -> EmailMessage:
        """The email ``send`` would deliver (multipart/alternative, text first)."""
        if message.format == "html":
            text, html_part = _html_to_text(message.body), message.body
        else:
            text, html_part = message.body, _text_to_html(message.body)
        url = message.attributes.get("url")
        if url:
            text += f"\n\n{url}\n"
            link = f'<p><a href="{html.escape(url, quote=True)}">{html.escape(url)}</a></p>'
            html_part = (
                html_part.replace("</body>", link + "</body>", 1)
                if "</body>" in html_part
                else html_part + link
            )
        email = EmailMessage()
        email["Subject"] = message.subject
        email["From"] = self._sender
        email["To"] = ", ".join(self._recipients)
        email["Date"] = formatdate(self._clock(), usegmt=True)
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        domain = self._sender.rpartition("@")[2] or "runbell.invalid"
        email["Message-ID"] = f"<{digest}@{domain}>"
        email["X-Runbell-Idempotency-Key"] = idempotency_key
        email.set_content(text)
        email.add_alternative(html_part, subtype="html")
        return email

    def _deliver(self, email: EmailMessage, started: float) -> SendResult:
        try:
            refused = self._exchange(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return self._failed(
                started,
                f"all recipients refused ({', '.join(map(str, sorted(set(codes))))})",
                retryable=all(400 <= code < 500 for code in codes),
                status_code=max(codes) if codes else None,
            )
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            detail = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                detail = "authentication failed"
            return self._failed(
                started,
                f"SMTP {exc.smtp_code}: {detail}",
                retryable=400 <= exc.smtp_code < 500,
                status_code=exc.smtp_code,
            )
        except smtplib.SMTPNotSupportedError as exc:
            return self._failed(started, f"server does not support {exc}", retryable=False)
        except smtplib.SMTPServerDisconnected as exc:
            return self._failed(started, f"connection lost ({exc})", retryable=True)
        except smtplib.SMTPException as exc:
            # What is left needs a person: e.g. no authentication method in common.
            return self._failed(started, f"SMTP error: {exc}", retryable=False)
        except OSError as exc:  # after SMTPException, which derives from OSError
            retryable = not isinstance(exc, ssl.SSLCertVerificationError)
            kind = "timed out" if isinstance(exc, TimeoutError) else "connection failed"
            return self._failed(started, f"{kind} ({type(exc).__name__})", retryable=retryable)
        if refused:
            names = ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in sorted(refused.items()))
            return SendResult(
                ok=True,
                retryable=False,
                reason=f"delivered; refused: {names}",
                target=self._target,
                latency_ms=elapsed_ms(started),
            )
        return SendResult.success(self._target, elapsed_ms(started))

    def _exchange(self, email: EmailMessage) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        if self._implicit_tls:
            smtp = smtplib.SMTP_SSL(
                self._host,
                self._port,
                timeout=self._timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        with smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self._username is not None:
                smtp.login(self._username, self._password or "")
            return smtp.send_message(email, self._sender, self._recipients)

    def _failed(
        self, started: float, reason: str, *, retryable: bool, status_code: int | None = None
    ) -> SendResult:
        return SendResult.failure(
            self._target,
            elapsed_ms(started),
            reason=self._redactor.redact(reason),
            retryable=retryable,
            status_code=status_code,
        )
