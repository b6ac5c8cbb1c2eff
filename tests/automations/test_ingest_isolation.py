"""Ingestion's group commit: one request's unwritable event fails that request only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from events.model import MAX_DEPTH, Event
from tests.automations.service_harness import Running, failed_run, running_service

ENV = {"HOOK_URL": "json://127.0.0.1:9/never-used"}


def nested(depth: int) -> dict[str, Any]:
    """A payload ``depth`` objects deep (``{}`` is one)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    async with running_service(tmp_path, env=ENV) as running:
        yield running


async def stored_ids(api: Running) -> set[str]:
    listed = (await api.client.get("/api/events", params={"limit": 1000})).json()
    return {e["id"] for e in listed["events"]}


async def test_a_deep_payload_is_422_naming_the_limit(api: Running) -> None:
    """A payload nested 300 deep (past the store's serializer) is refused at the parser."""
    bad = failed_run(payload={"outer": nested(300)})
    answer = await api.client.post("/api/events", json=bad)
    assert answer.status_code == 422
    [detail] = answer.json()["detail"]
    assert detail["loc"] == ["body"]
    assert f"payload nested deeper than {MAX_DEPTH}" in detail["msg"]
    assert f"at payload.outer{'.a' * (MAX_DEPTH - 1)}" in detail["msg"]
    assert await stored_ids(api) == set()


async def test_a_deep_request_does_not_fail_concurrent_requests(api: Running) -> None:
    """Concurrent posts, one with a 300-deep payload: only that one is refused."""
    goods = [failed_run() for _ in range(20)]
    bad = failed_run(payload=nested(300))
    answers = await asyncio.gather(
        *(api.client.post("/api/events", json=g) for g in goods[:10]),
        api.client.post("/api/events", json=bad),
        *(api.client.post("/api/events", json=g) for g in goods[10:]),
    )
    codes = [a.status_code for a in answers]
    assert codes == [202] * 10 + [422] + [202] * 10
    assert await stored_ids(api) == {g["id"] for g in goods}


async def test_group_commit_isolates_an_unwritable_event(api: Running) -> None:
    """The combined write fails on one caller's event (one the validators never saw):
    that caller gets the error, nothing of its request is stored; the others are stored."""
    service = api.service
    good_before = Event.from_parsed_json(failed_run())
    good_after = [Event.from_parsed_json(failed_run()) for _ in range(2)]
    # model_construct skips validation: an event the store's serializer cannot write
    # (pydantic's JSON writer stops at 256 levels).
    unwritable = Event.model_construct(
        **{**Event.from_parsed_json(failed_run()).__dict__, "payload": nested(300)}
    )
    partner = Event.from_parsed_json(failed_run())  # in the rejected request with it
    results = await asyncio.gather(
        service.ingest([good_before]),
        service.ingest([partner, unwritable]),
        service.ingest(good_after),
        return_exceptions=True,
    )
    assert results[0] == [good_before.id]
    assert isinstance(results[1], ValueError)
    assert results[2] == [e.id for e in good_after]
    stored = await stored_ids(api)
    assert stored == {str(e.id) for e in (good_before, *good_after)}


async def test_a_failed_publish_after_the_store_still_reaches_the_engine(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored together, then the bus fails once: each caller's events are published when
    its part is retried (stored ones are not lost to the idempotent insert)."""
    service = api.service
    publish = service.bus.publish
    failures = [RuntimeError("bus hiccup")]
    published: list[UUID] = []

    async def flaky(events: Any) -> None:
        if failures:
            raise failures.pop()
        published.extend(e.id for e in events)
        await publish(events)

    monkeypatch.setattr(service.bus, "publish", flaky)
    events = [Event.from_parsed_json(failed_run()) for _ in range(3)]
    results = await asyncio.gather(*(service.ingest([e]) for e in events))
    assert results == [[e.id] for e in events]
    assert published == [e.id for e in events]


def test_depth_payload_round_trips_at_the_limit() -> None:
    """A payload exactly MAX_DEPTH deep is accepted and survives the store's JSON."""
    event = Event.from_parsed_json(failed_run(payload=nested(MAX_DEPTH)))
    assert Event.model_validate_json(event.to_json()).payload == event.payload
    assert orjson.loads(event.to_json())["payload"] == nested(MAX_DEPTH)


async def test_a_store_failure_is_503_and_other_requests_still_answer(api: Running) -> None:
    """The store failing is not the client's fault: 503, retry later (no traceback)."""
    async with api.service.db.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE events RENAME TO events_away")
    answer = await api.client.post("/api/events", json=failed_run())
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("storage unavailable: ")
    async with api.service.db.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE events_away RENAME TO events")
    assert (await api.client.post("/api/events", json=failed_run())).status_code == 202
