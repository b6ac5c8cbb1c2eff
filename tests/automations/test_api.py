"""The HTTP API on the embedded default: ingestion, validation, auth, queries."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import orjson
import pytest

from automations.testing import settle
from events import MAX_EVENT_BYTES
from notifiers.testing import RecordingNotifier
from tests.automations.service_harness import (
    FAILURES_YAML,
    TOKEN,
    Running,
    failed_run,
    running_service,
)

ENV = {"HOOK_URL": "json://127.0.0.1:9/never-used"}


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    team = RecordingNotifier()
    async with running_service(tmp_path, env=ENV, notifiers={"team": team}) as running:
        running.team = team  # type: ignore[attr-defined]
        yield running


async def test_post_answers_202_with_ids_and_fires_once_per_id(api: Running) -> None:
    """A failed production run fires once; re-posting the same id is accepted and stored once."""
    event = failed_run()
    first = await api.client.post("/api/events", json=event)
    again = await api.client.post("/api/events", json=[event])
    assert first.status_code == 202
    assert first.json() == {"accepted": [event["id"]]}
    assert again.status_code == 202
    await settle(api.service)
    sent = api.team.messages  # type: ignore[attr-defined]
    assert [m.subject for m in sent] == ["Run daft-wallaby failed"]
    assert sent[0].body == "RuntimeError: warehouse load failed"
    # The notify's automation.action.* events are stored too: look at the run's events.
    listed = (await api.client.get("/api/events", params={"name": "flow-run.Failed"})).json()
    assert [e["id"] for e in listed["events"]] == [event["id"]]


async def test_non_matching_events_do_not_fire(api: Running) -> None:
    """Wrong tag, wrong state or wrong resource kind: no firing, no notification."""
    await api.client.post(
        "/api/events",
        json=[
            failed_run(tag="tag.staging"),
            failed_run(event="flow-run.Completed"),
            {**failed_run(), "resource": {"resource.id": "task-run.1"}},
        ],
    )
    await settle(api.service)
    assert api.team.messages == []  # type: ignore[attr-defined]
    assert (await api.client.get("/api/firings")).json() == {"firings": []}


async def test_prefect_shaped_events_are_accepted(api: Running) -> None:
    """A Prefect event (prefect.* names) is normalised, stored and matched like a native one."""
    prefect = {
        "id": "01a1fde4-c725-758d-8410-4a749b55a105",
        "occurred": "2026-11-21T11:36:31.269221Z",
        "event": "prefect.flow-run.Crashed",
        "resource": {
            "prefect.resource.id": "prefect.flow-run.341a4f59",
            "prefect.resource.name": "daft-wallaby",
            "prefect.state-message": "crashed",
        },
        "related": [
            {"prefect.resource.id": "prefect.tag.production", "prefect.resource.role": "tag"}
        ],
        "payload": {},
    }
    assert (await api.client.post("/api/events", json=prefect)).status_code == 202
    await settle(api.service)
    assert [m.body for m in api.team.messages] == ["crashed"]  # type: ignore[attr-defined]
    stored = (await api.client.get("/api/events", params={"name": "flow-run.*"})).json()
    assert stored["events"][0]["resource"]["resource.id"] == "flow-run.341a4f59"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"{not json", ["body"]),
        (b'{"id": "x"}', ["body", "id"]),
        (b"[1]", ["body", 0]),
        (b"[]", ["body"]),
    ],
)
async def test_invalid_input_is_422_naming_the_field(
    api: Running, body: bytes, loc: list[Any]
) -> None:
    """Malformed JSON, a wrong type or a bad event: 422, the location named, nothing stored."""
    answer = await api.client.post(
        "/api/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    locations = [d["loc"] for d in answer.json()["detail"]]
    assert loc in locations or any(found[: len(loc)] == loc for found in locations)
    assert (await api.client.get("/api/events")).json()["events"] == []


async def test_one_bad_event_rejects_the_whole_batch(api: Running) -> None:
    """All or nothing: a list with one invalid event stores none of them."""
    good = failed_run()
    bad = failed_run(occurred="yesterday")
    answer = await api.client.post("/api/events", json=[good, bad])
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][:3] == ["body", 1, "occurred"]
    assert (await api.client.get("/api/events")).json()["events"] == []


async def test_oversized_event_is_413(api: Running) -> None:
    """An event over 1 MB is refused with 413 and not stored."""
    event = failed_run(payload={"blob": "x" * MAX_EVENT_BYTES})
    answer = await api.client.post("/api/events", json=event)
    assert answer.status_code == 413
    assert (await api.client.get("/api/events")).json()["events"] == []


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    """A body over the configured limit is refused before it is parsed."""
    async with running_service(
        tmp_path, env=ENV, notifiers={"team": RecordingNotifier()}, max_body_bytes=1000
    ) as small:
        answer = await small.client.post("/api/events", json=[failed_run() for _ in range(10)])
    assert answer.status_code == 413


async def test_streamed_body_over_the_limit_is_413(tmp_path: Path) -> None:
    """A chunked body (no Content-Length) is cut off with 413 once it passes the limit."""
    encoded = orjson.dumps([failed_run() for _ in range(10)])

    async def chunks() -> Any:
        for start in range(0, len(encoded), 100):
            yield encoded[start : start + 100]

    async with running_service(
        tmp_path, env=ENV, notifiers={"team": RecordingNotifier()}, max_body_bytes=1000
    ) as small:
        answer = await small.client.post("/api/events", content=chunks())
        assert answer.status_code == 413
        assert "exceeds 1000 bytes" in answer.json()["detail"]
        assert (await small.client.get("/api/events")).json()["events"] == []


async def test_openapi_documents_post_events(api: Running) -> None:
    """The schema lists POST /api/events with its body, its answers and the bearer scheme."""
    schema = (await api.client.get("/openapi.json")).json()
    post = schema["paths"]["/api/events"]["post"]
    assert post["security"] == [{"HTTPBearer": []}]
    assert "application/json" in post["requestBody"]["content"]
    assert {"202", "401", "413", "422"} <= set(post["responses"])


async def test_everything_but_health_needs_the_token(api: Running) -> None:
    """No token or a wrong one: 401; /health answers without one."""
    transport = api.client._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://runbell.test") as anon:
        assert (await anon.get("/health")).status_code == 200
        assert (await anon.post("/api/events", json=failed_run())).status_code == 401
        assert (await anon.get("/api/events")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await anon.get("/api/firings", headers=wrong)).status_code == 401


async def test_post_events_answers_like_the_other_routes(api: Running) -> None:
    """POST /api/events (a route without dependency solving): the same 401 (body, challenge),
    a case-insensitive Bearer scheme, a streamed (chunked) body, 422 naming the field."""
    transport = api.client._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://runbell.test") as anon:
        refused = await anon.post("/api/events", json=failed_run())
        reference = await anon.get("/api/events")
        lower = {"Authorization": f"bearer {TOKEN}"}

        encoded = orjson.dumps(failed_run())

        async def chunks() -> Any:
            yield encoded[:20]
            yield encoded[20:]

        streamed = await anon.post("/api/events", content=chunks(), headers=lower)
        bad = await anon.post("/api/events", json={"resource": {}}, headers=lower)
    assert (refused.status_code, refused.json()) == (401, reference.json())
    assert refused.headers["www-authenticate"] == reference.headers["www-authenticate"]
    assert streamed.status_code == 202 and len(streamed.json()["accepted"]) == 1
    assert bad.status_code == 422 and bad.json()["detail"]


async def test_query_filters_and_cursor(api: Running) -> None:
    """GET /api/events filters by name glob, resource id and time; the cursor pages through all."""
    events = [
        failed_run(occurred=f"2026-11-21T10:{minute:02d}:00Z", event=name)
        for minute, name in enumerate(["flow-run.Failed", "flow-run.Completed"] * 5)
    ]
    await api.client.post("/api/events", json=events)
    failed = (await api.client.get("/api/events", params={"name": "*.Failed"})).json()["events"]
    assert len(failed) == 5
    one = events[3]["resource"]["resource.id"]
    by_resource = (await api.client.get("/api/events", params={"resource_id": one})).json()
    assert [e["id"] for e in by_resource["events"]] == [events[3]["id"]]
    window = {"since": "2026-11-21T10:02:00Z", "until": "2026-11-21T10:05:00Z"}
    assert len((await api.client.get("/api/events", params=window)).json()["events"]) == 3
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    for _ in range(10):
        page = (await api.client.get("/api/events", params=params)).json()
        seen += [e["id"] for e in page["events"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(e["id"] for e in events)
    assert len(seen) == len(set(seen))
    bad = await api.client.get("/api/events", params={"cursor": "garbage"})
    assert bad.status_code == 422


WATCH_YAML = (
    FAILURES_YAML
    + """
  - name: watch-dead-notifies
    trigger:
      type: event
      posture: Reactive
      expect: ["automation.action.failed"]
      match: {resource.id: "automation.production-failures"}
    actions:
      - type: notify
        channel: ops
        subject: "a notify died"
"""
).replace("channels:\n", "channels:\n  ops:\n    url: ${HOOK_URL}\n")


async def test_action_events_are_stored_and_reach_the_engine_only_when_they_could_match(
    tmp_path: Path,
) -> None:
    """Every automation.action.* event is stored and listed; the engine is handed those an
    automation could match (a dead notify fires the watcher), not the others."""
    team, ops = RecordingNotifier(), RecordingNotifier()
    team.fail("channel_not_found", retryable=False)
    async with running_service(
        tmp_path, env=ENV, yaml_text=WATCH_YAML, notifiers={"team": team, "ops": ops}
    ) as running:
        await running.client.post("/api/events", json=failed_run())
        deadline = 20
        while not ops.messages and deadline:
            await settle(running.service)
            deadline -= 1
        trail = {
            name: (await running.client.get("/api/events", params={"name": name})).json()
            for name in ("automation.action.triggered", "automation.action.failed")
        }
        ids = {name: [UUID(e["id"]) for e in page["events"]] for name, page in trail.items()}
        unread = await running.service.state.unprocessed(
            [*ids["automation.action.triggered"], *ids["automation.action.failed"]]
        )
    assert [m.subject for m in ops.messages] == ["a notify died"]
    # one triggered per automation's notify, one failed (the team's notify)
    assert len(ids["automation.action.triggered"]) == 2
    assert len(ids["automation.action.failed"]) == 1
    assert unread == set(ids["automation.action.triggered"])
