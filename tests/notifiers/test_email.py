"""EmailNotifier against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from notifiers import EmailNotifier, Message, Notifier
from tests.integration.http_receiver import free_port
from tests.integration.smtp_server import SmtpServer

pytestmark = pytest.mark.integration

PASSWORD = "smtp-pa55word-xyz"


def notifier_for(server: SmtpServer, **kwargs: object) -> EmailNotifier:
    return EmailNotifier(
        server.host,
        server.port,
        "runbell@example.com",
        ["ops@example.com", "oncall@example.com"],
        timeout=2.0,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_delivers_text_and_html_parts(smtp_server: SmtpServer) -> None:
    """The server receives one multipart/alternative mail with both parts and the link."""
    notifier = notifier_for(smtp_server)
    assert isinstance(notifier, Notifier)
    message = Message(
        "Flow run failed", "etl <crashed>\nat 11:36", attributes={"url": "http://ui/r/1"}
    )
    result = await notifier.send(message, idempotency_key="firing-1:0")

    assert result.ok, result.reason
    [mail] = await smtp_server.wait_for_async(1)
    assert mail.mail_from == "runbell@example.com"
    assert mail.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert mail.message["Subject"] == "Flow run failed"
    assert mail.message.get_content_type() == "multipart/alternative"
    assert "etl <crashed>\nat 11:36" in mail.part("text/plain")
    assert "http://ui/r/1" in mail.part("text/plain")
    html = mail.part("text/html")
    assert "etl &lt;crashed&gt;" in html
    assert '<a href="http://ui/r/1">' in html
    assert mail.message["X-Runbell-Idempotency-Key"] == "firing-1:0"


async def test_message_id_follows_idempotency_key(smtp_server: SmtpServer) -> None:
    """The same key yields the same Message-ID, so a duplicate is recognisable."""
    notifier = notifier_for(smtp_server)
    for key in ("k1", "k1", "k2"):
        assert (await notifier.send(Message("s", "b"), idempotency_key=key)).ok
    ids = [m.message["Message-ID"] for m in await smtp_server.wait_for_async(3)]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].endswith("@example.com>")


async def test_html_body_becomes_text_part(smtp_server: SmtpServer) -> None:
    """An HTML message is the HTML part and is reduced to readable text for the other."""
    body = "<html><body><p>Run <b>failed</b></p><p>see logs</p></body></html>"
    await notifier_for(smtp_server).send(Message("s", body, format="html"), idempotency_key="k")
    [mail] = await smtp_server.wait_for_async(1)
    assert "<b>failed</b>" in mail.part("text/html")
    assert mail.part("text/plain").strip() == "Run failed\nsee logs"


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [("451 4.3.0 try again later", True), ("452 4.3.1 full", True), ("554 5.7.1 rejected", False)],
)
async def test_smtp_reply_codes_decide_retryability(
    smtp_server: SmtpServer, reply: str, retryable: bool
) -> None:
    """4xx SMTP replies are retryable, 5xx are not; the code is the status."""
    smtp_server.script(reply)
    result = await notifier_for(smtp_server).send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, retryable, int(reply[:3]))
    assert reply[4:] in result.reason


@pytest.fixture
def auth_server() -> Iterator[SmtpServer]:
    with SmtpServer(credentials=("alerts", PASSWORD)) as server:
        yield server


async def test_login_then_deliver(auth_server: SmtpServer) -> None:
    """With username and password the notifier logs in and delivers."""
    notifier = notifier_for(auth_server, username="alerts", password=PASSWORD)
    result = await notifier.send(Message("s", "b"), idempotency_key="k")
    assert result.ok, result.reason
    await auth_server.wait_for_async(1)
    assert PASSWORD not in notifier.target
    assert notifier.target.startswith("smtp://alerts@127.0.0.1:")


async def test_bad_password_is_permanent_and_not_echoed(auth_server: SmtpServer) -> None:
    """535 authentication failure is not retryable and never shows the password."""
    wrong = "wrong-" + PASSWORD
    notifier = notifier_for(auth_server, username="alerts", password=wrong)
    result = await notifier.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable, result.status_code) == (False, False, 535)
    assert wrong not in f"{result.reason} {result.target} {notifier!r}"


async def test_starttls_unsupported_is_permanent(smtp_server: SmtpServer) -> None:
    """Asking for STARTTLS from a server without it is a configuration failure."""
    result = await notifier_for(smtp_server, starttls=True).send(
        Message("s", "b"), idempotency_key="k"
    )
    assert (result.ok, result.retryable) == (False, False)
    assert "STARTTLS" in result.reason


async def test_refused_connection_is_retryable() -> None:
    """Nothing listening is a retryable connection failure."""
    notifier = EmailNotifier("127.0.0.1", free_port(), "a@example.com", ["b@example.com"])
    result = await notifier.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable) == (False, True)
    assert "connection failed" in result.reason


async def test_silent_server_times_out_within_bound() -> None:
    """A server that accepts the connection but never greets is a retryable timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel completes the handshake; nobody ever answers
        port = listener.getsockname()[1]
        notifier = EmailNotifier("127.0.0.1", port, "a@example.com", ["b@example.com"], timeout=0.5)
        started = time.monotonic()
        result = await notifier.send(Message("s", "b"), idempotency_key="k")
    assert (result.ok, result.retryable) == (False, True)
    assert "timed out" in result.reason
    assert time.monotonic() - started < 0.5 + 1.5


def test_needs_a_recipient() -> None:
    """An email channel without recipients is a configuration error."""
    with pytest.raises(ValueError, match="recipient"):
        EmailNotifier("127.0.0.1", 25, "a@example.com", [])
