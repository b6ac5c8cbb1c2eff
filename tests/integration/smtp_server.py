"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records every message it accepts.

Use the ``smtp_server`` fixture (registered in ``tests/conftest.py``)::

    async def test_x(smtp_server):
        smtp_server.script("451 4.7.1 try again later")   # next DATA answered so
        ... send to 127.0.0.1:smtp_server.port ...
        [mail] = await smtp_server.wait_for_async(1)
        assert mail.message["Subject"] == "..."

For AUTH, build one with credentials: ``with SmtpServer(credentials=("u", "p")) as s:``
(AUTH PLAIN/LOGIN offered without TLS; a wrong password gets ``535``). Waiting is
on a condition variable, never a sleep loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.integration.http_receiver import free_port

__all__ = ["ReceivedMail", "SmtpServer", "smtp_server"]


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: envelope and parsed content."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage

    def part(self, content_type: str) -> str:
        """The decoded body of the first part of ``content_type`` (e.g. ``text/html``)."""
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                # SMTP carries CRLF line ends; compare as Python text.
                return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]
        raise KeyError(content_type)


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self._server._accept(envelope)


class SmtpServer:
    """The server behind the ``smtp_server`` fixture; see the module docstring."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self._cond = threading.Condition()
        self._mails: list[ReceivedMail] = []
        self._script: deque[str] = deque()
        self.port = free_port()
        self.host = "127.0.0.1"
        kwargs: dict[str, Any] = {}
        if credentials is not None:
            kwargs.update(
                authenticator=self._authenticator(credentials),
                # Offered but not required: aiosmtpd warns (an error under our
                # warnings filter) about requiring AUTH without TLS.
                auth_require_tls=False,
            )
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)

    @staticmethod
    def _authenticator(credentials: tuple[str, str]) -> Any:
        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == credentials
            )
            return AuthResult(success=ok, handled=False)

        return authenticate

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()

    def script(self, *replies: str) -> None:
        """Answer the next DATA commands with these SMTP replies (e.g. ``"451 4.3.0 later"``)."""
        with self._cond:
            self._script.extend(replies)

    def _accept(self, envelope: Any) -> str:
        with self._cond:
            if self._script:
                return self._script.popleft()
            raw = bytes(envelope.original_content or envelope.content)
            parsed = message_from_bytes(raw, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self._mails.append(
                ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), raw, parsed)
            )
            self._cond.notify_all()
            return "250 OK"

    @property
    def mails(self) -> list[ReceivedMail]:
        """Snapshot of the accepted messages, in order."""
        with self._cond:
            return list(self._mails)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until ``count`` messages were accepted; raise ``TimeoutError`` otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._mails) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} mail(s) within {timeout}s, got {len(self._mails)}"
                )
            return list(self._mails)

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """``wait_for`` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A recording aiosmtpd server on 127.0.0.1, stopped after the test."""
    with SmtpServer() as server:
        yield server
