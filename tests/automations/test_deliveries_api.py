"""GET /api/deliveries (filters, attempts) and POST /api/deliveries/{id}/replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automations.testing import settle
from notifiers.testing import RecordingNotifier
from tests.automations.service_harness import failed_run, running_service

YAML = """
channels:
  team: {url: "json://127.0.0.1:9/team"}
  ops: {url: "json://127.0.0.1:9/ops"}
automations:
  - name: failures
    trigger: {type: event, expect: ["flow-run.Failed"]}
    actions:
      - {type: notify, channel: team, subject: "{{ run.name }} failed"}
  - name: crashes
    trigger: {type: event, expect: ["flow-run.Crashed"]}
    actions:
      - {type: notify, channel: ops, subject: "{{ run.name }} crashed"}
"""


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    team, ops = RecordingNotifier("json://127.0.0.1:9/t***"), RecordingNotifier()
    async with running_service(
        tmp_path, env={}, yaml_text=YAML, notifiers={"team": team, "ops": ops}
    ) as running:
        running.team, running.ops = team, ops  # type: ignore[attr-defined]
        yield running


async def deliveries(api: Any, **params: Any) -> list[dict[str, Any]]:
    answer = await api.client.get("/api/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


async def test_deliveries_list_each_row_with_its_attempts(api: Any) -> None:
    """Each delivery carries its attempts: status, latency, code, masked target, reason."""
    api.team.fail("HTTP 503 from team", status_code=503, retryable=False)
    await api.client.post("/api/events", json=failed_run(name="w1"))
    await settle(api.service)
    [row] = await deliveries(api)
    assert (row["automation"], row["channel"], row["action_type"]) == ("failures", "team", "notify")
    assert row["status"] == "dead"
    [attempt] = row["attempt_log"]
    assert attempt["ok"] is False
    assert attempt["status_code"] == 503
    assert attempt["target"] == "json://127.0.0.1:9/t***"
    assert attempt["reason"] == "HTTP 503 from team"
    assert attempt["latency_ms"] >= 0


async def test_deliveries_filters(api: Any) -> None:
    """status, automation, channel, firing_id, since and limit each narrow the list."""
    api.ops.fail("nope", retryable=False)
    await api.client.post(
        "/api/events",
        json=[failed_run(name="w1"), failed_run(name="w2", event="flow-run.Crashed")],
    )
    await settle(api.service)
    everything = await deliveries(api)
    assert len(everything) == 2
    assert {r["automation"] for r in await deliveries(api, automation="crashes")} == {"crashes"}
    assert [r["status"] for r in await deliveries(api, status="dead")] == ["dead"]
    assert [r["channel"] for r in await deliveries(api, channel="team")] == ["team"]
    one = everything[0]
    assert [r["id"] for r in await deliveries(api, firing_id=one["firing_id"])] == [one["id"]]
    assert len(await deliveries(api, limit=1)) == 1
    assert await deliveries(api, since="2999-01-01T00:00:00Z") == []


async def test_replay_owes_a_dead_delivery_again_with_the_same_key(api: Any) -> None:
    """A replayed delivery is a new attempt series, sent with the unchanged idempotency key."""
    api.team.fail("down", retryable=False)
    await api.client.post("/api/events", json=failed_run(name="w1"))
    await settle(api.service)
    [row] = await deliveries(api, status="dead")
    answer = await api.client.post(f"/api/deliveries/{row['id']}/replay")
    assert answer.status_code == 202
    await settle(api.service)
    [after] = await deliveries(api)
    assert (after["status"], after["series"], after["attempts"]) == ("sent", 1, 1)
    assert [(a["series"], a["ok"]) for a in after["attempt_log"]] == [(0, False), (1, True)]
    assert [s.idempotency_key for s in api.team.sent] == [row["id"], row["id"]]


async def test_replay_of_an_unknown_or_busy_delivery_is_refused(api: Any) -> None:
    """404 for an unknown id; 409 while the delivery is still owed."""
    missing = await api.client.post("/api/deliveries/nope:0/replay")
    assert missing.status_code == 404
    await api.service.dispatcher.stop()  # keep the next delivery pending
    await api.client.post("/api/events", json=failed_run(name="w1"))
    drain = getattr(api.service.bus, "drain", None)
    if drain is not None:
        await drain(10)
    [row] = await deliveries(api)
    assert row["status"] == "pending"
    busy = await api.client.post(f"/api/deliveries/{row['id']}/replay")
    assert busy.status_code == 409
