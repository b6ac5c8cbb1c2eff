"""No secret is ever logged, stored in an attempt record or returned by the API."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from events.model import Event
from events.store import EventQuery
from notifiers import Redactor, configure_logging
from tests.automations.service_harness import TOKEN, failed_run, running_service
from tests.integration.http_receiver import HttpReceiver, free_port

PASSWORD = "hunter2-pass-9f8e"
QUERY_TOKEN = "tok-SECRET-7d6c5b4a"

YAML = """
channels:
  good:
    url: ${GOOD_URL}
  dead:
    url: ${DEAD_URL}
automations:
  - name: both
    trigger:
      type: event
      expect: ["flow-run.Failed"]
    actions:
      - {type: notify, channel: good}
      - {type: notify, channel: dead}
"""


async def test_secrets_never_leak(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    """Channel credentials and the API token stay out of logs, attempts and API answers."""
    env = {
        "GOOD_URL": f"json://user:{PASSWORD}@127.0.0.1:{http_receiver.port}/hook?token={QUERY_TOKEN}",
        "DEAD_URL": f"json://user:{PASSWORD}@127.0.0.1:{free_port()}/hook?token={QUERY_TOKEN}",
    }
    logs = io.StringIO()
    async with running_service(tmp_path, env=env, yaml_text=YAML) as running:
        redactor = Redactor(running.service.config.secrets())
        redactor.add(TOKEN)
        configure_logging(redactor, json=True, stream=logs, level="debug")
        await running.client.post("/api/events", json=failed_run())
        await http_receiver.wait_for_async(1)
        # The dead channel fails (connection refused) and is retried later: one attempt is enough.
        # Bounded wait on a condition: both first attempts recorded (by the loop or this pass).
        await running.service.dispatcher.dispatch_due()
        for _ in range(50):
            if len({a.outbox_id for a in await running.service.state.attempts()}) >= 2:
                break
            with contextlib.suppress(TimeoutError):
                await running.service.dispatcher.progressed(0.2)
        answers = [
            (await running.client.get(path)).text
            for path in ("/api/events", "/api/firings", "/api/deliveries")
        ]
        answers.append((await running.client.post("/api/events", content=b"{")).text)
        attempts = await running.service.state.attempts()
    configure_logging(Redactor(), json=False)
    assert {a.ok for a in attempts} == {True, False}
    records = [a.target + " " + a.reason for a in attempts]
    haystacks = {"logs": logs.getvalue(), "api": "\n".join(answers), "attempts": "\n".join(records)}
    assert "action_delivered" in haystacks["logs"]
    for where, text in haystacks.items():
        for secret in (PASSWORD, QUERY_TOKEN, TOKEN):
            assert secret not in text, f"{secret!r} leaked into {where}"


# -- error records: a target that answers 500 and echoes the request back --------------

BEARER = "bearer-SECRET-3e2d1c0b"
# A space and a slash: the query string goes out percent-encoded, and the target echoes it so.
API_KEY = "api key/SECRET-9a8b"
# Too short to look like a token: mask_url leaves it in a URL's path; masked by value.
PATH_TOKEN = "pth-9a8b"

ECHO_YAML = """
automations:
  - name: echoed
    trigger:
      type: event
      expect: ["flow-run.Failed"]
    actions:
      - type: call-webhook
        url: "http://127.0.0.1:${ECHO_PORT}/echo?api_key=${API_KEY}"
        headers: {Authorization: "Bearer ${BEARER}"}
        retry: {max_attempts: 1}
      - type: call-webhook
        url: "http://127.0.0.1:${ECHO_PORT}/echo/${PATH_TOKEN}"
        retry: {max_attempts: 1}
"""


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers 500 with the request line and every header, the way a debugging proxy does."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # The request line as received (the query still percent-encoded), then the headers.
        echo = "\n".join([self.requestline, *(f"{k}: {v}" for k, v in self.headers.items())])
        payload = echo.encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _echo_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_secrets_never_leak_through_error_records(tmp_path: Path) -> None:
    """A call-webhook target answering 500 with the request echoed: the ``${ENV}`` secrets
    of its URL and headers (and their percent-encoded forms) stay out of the outbox row,
    the attempts, the automation.action.failed event (stored and as the API returns
    it), GET /api/deliveries and the logs."""
    logs = io.StringIO()
    with _echo_server() as echo:
        env = {
            "ECHO_PORT": str(echo.server_address[1]),
            "API_KEY": API_KEY,
            "BEARER": BEARER,
            "PATH_TOKEN": PATH_TOKEN,
        }
        async with running_service(tmp_path, env=env, yaml_text=ECHO_YAML) as running:
            redactor = Redactor(running.service.config.secrets())
            redactor.add(TOKEN)
            configure_logging(redactor, json=True, stream=logs, level="debug")
            await running.client.post("/api/events", json=failed_run())
            stored: list[Event] = []
            for _ in range(100):  # bounded wait on a condition: the failure is in the trail
                await running.service.dispatcher.dispatch_due()
                found = await running.service.state.deliveries(limit=10)
                if len(found) == 2 and all(row.status == "dead" for row, _ in found):
                    page = await running.service.store.query(
                        EventQuery(name="automation.action.failed")
                    )
                    stored = page.events
                    if len(stored) == 2:
                        break
                with contextlib.suppress(TimeoutError):
                    await running.service.dispatcher.progressed(0.1)
            answers = [
                (await running.client.get(path)).text
                for path in ("/api/events", "/api/deliveries", "/api/firings")
            ]
            attempts = await running.service.state.attempts()
            rows = [row for row, _ in await running.service.state.deliveries(limit=10)]
        configure_logging(Redactor(), json=False)
    assert [row.status for row in rows] == ["dead", "dead"]
    assert all(row.last_error and "HTTP 500" in row.last_error for row in rows)
    assert "automation.action.failed" in answers[0]
    assert len(stored) == 2, "the automation.action.failed events were not stored"
    assert "action_failed" in logs.getvalue()
    haystacks = {
        "last_error": "\n".join(row.last_error or "" for row in rows),
        "attempts": "\n".join(f"{a.target} {a.reason}" for a in attempts),
        "stored event": "\n".join(e.model_dump_json() for e in stored),
        "api": "\n".join(answers),
        "logs": logs.getvalue(),
    }
    forms = {
        BEARER,
        PATH_TOKEN,
        API_KEY,
        quote(API_KEY),
        quote_plus(API_KEY),
        quote_plus(API_KEY, safe="/"),
    }
    leaks = [f"{s!r} in {w}" for w, text in haystacks.items() for s in forms if s in text]
    assert not leaks, "leaked: " + "; ".join(leaks)
