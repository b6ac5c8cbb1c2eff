"""200 failed runs POSTed to the real Service become one digest notification."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from automations.testing import settle
from events.testing import FakeClock
from notifiers.testing import RecordingNotifier
from tests.automations.service_harness import failed_run, running_service

GROUPED_YAML = """
channels:
  team:
    url: json://127.0.0.1:9/hook
    rate_limit: 5/m
automations:
  - name: production-failures
    trigger:
      type: event
      posture: Reactive
      expect: ["flow-run.Failed", "flow-run.Crashed"]
      match: {resource.id: "flow-run.*"}
      match_related: {resource.role: tag, resource.id: "tag.production"}
    actions:
      - type: notify
        channel: team
        group_by: [deployment]
        group_wait: 30s
"""


def etl_failure(clock: FakeClock, run: int) -> dict[str, Any]:
    event = failed_run(name=f"etl-{run}", occurred=clock.now().isoformat())
    event["related"].append(
        {
            "resource.id": "prefect.deployment.7f3e",
            "resource.role": "deployment",
            "resource.name": "etl",
        }
    )
    return event


async def test_two_hundred_failed_runs_posted_become_one_notification(tmp_path: Path) -> None:
    """POST 200 failed-run events: after group_wait exactly one digest arrives, listing 200."""
    await _two_hundred_become_one(tmp_path, f"sqlite:///{tmp_path / 'runbell.db'}")


@pytest.mark.integration
async def test_two_hundred_become_one_on_postgres(tmp_path: Path, fresh_postgres_url: str) -> None:
    """The same on PostgreSQL (advisory-locked grouping writes, upserted group rows)."""
    await _two_hundred_become_one(tmp_path, fresh_postgres_url)


async def _two_hundred_become_one(tmp_path: Path, database_url: str) -> None:
    clock, team = FakeClock(), RecordingNotifier()
    async with running_service(
        tmp_path,
        env={},
        yaml_text=GROUPED_YAML,
        database_url=database_url,
        notifiers={"team": team},
        clock=clock,
    ) as running:
        service, client = running.service, running.client
        events = [etl_failure(clock, run) for run in range(200)]
        assert (await client.post("/api/events", json=events)).status_code == 202
        await settle(service)
        grouped = await service.state.outbox(status="grouped", limit=1000)
        assert (len(grouped), team.sent) == (200, [])

        await clock.advance(timedelta(seconds=30))
        for _ in range(40):  # the dispatcher's timer wakes on the fake clock
            if team.sent:
                break
            with contextlib.suppress(TimeoutError):
                await service.dispatcher.progressed(0.25)
        await settle(service)

        [sent] = team.sent
        assert sent.message.subject == "[FIRING:200] production-failures deployment=etl"
        assert "- and 180 more" in sent.message.body
        answer = await client.get("/api/deliveries", params={"status": "sent"})
        [delivery] = answer.json()["deliveries"]
        assert delivery["id"] == sent.idempotency_key
