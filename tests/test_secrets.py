"""No secret is ever logged, stored in an attempt record or returned by the API."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

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
