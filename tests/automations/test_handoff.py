"""The service and a delivery worker process coordinate through the database only.

Owed rows: SQLite's ``data_version`` poll, PostgreSQL's NOTIFY in the committing
transaction. The trail: the worker stores what no automation watches, hands the
rest (and a pass that changed a paused flag) to the ``delivery_trail`` inbox, which
the service drains into its ingestion.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from automations.service.worker import _Trail, _watch
from automations.spec.loader import load_config
from automations.state import AttemptRow, Firing, Intent, Outcome, StateStore
from automations.state.handoff import OUTBOX_CHANNEL, CommitPoll
from events.clock import SystemClock
from events.database import create_engine
from events.model import Event
from events.sql_store import SqlEventStore
from events.store import EventQuery
from tests.automations.service_harness import failed_run, running_service

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

WATCHING = """
automations:
  - name: audit
    trigger:
      type: event
      expect: ["automation.action.executed"]
      match: {resource.id: "automation.etl"}
    actions:
      - type: do-nothing
"""


def _firing(n: int) -> Firing:
    return Firing(f"firing-{n}", "etl", "triggered", T0, {}, [], {})


async def _owe(state: StateStore, n: int, now: datetime = T0) -> None:
    """Commit a batch owing one intent, as the engine does."""
    firing = _firing(n)
    await state.commit_batch(
        processed=[f"event-{n}"],
        firings=[firing],
        intents=[Intent(firing.id, "etl", 0, {"type": "do-nothing"})],
        now=now,
        checkpoint=None,
    )


def _trail_event(name: str, automation: str) -> Event:
    return Event.model_validate(
        failed_run(event=name, resource={"resource.id": f"automation.{automation}"})
    )


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """A service's and a worker's state: two engines, one connection each, one file."""
    url = f"sqlite:///{tmp_path / 'runbell.db'}"
    engines: list[AsyncEngine] = [create_engine(url, pool_size=1, max_overflow=0) for _ in "ab"]
    service, worker = (StateStore(db) for db in engines)
    await service.create_tables()
    await SqlEventStore(engines[0]).start()
    yield service, worker
    for db in engines:
        await db.dispose()


async def test_the_poll_sees_rows_a_commit_owes_and_nothing_once_claimed(
    two: tuple[StateStore, StateStore], tmp_path: Path
) -> None:
    """The poll reads the outbox only after a commit, and answers due only for owed rows."""
    service, worker = two
    poll = CommitPoll(str(tmp_path / "runbell.db"))
    try:
        seen, due = poll.owed(None, T0)
        assert not due  # nothing owed yet
        assert poll.owed(seen, T0) == (seen, False)

        await _owe(service, 1)
        seen, due = poll.owed(seen, T0)
        assert due
        assert poll.owed(seen, T0) == (seen, False)  # nothing committed since

        claimed = await worker.claim_due(T0, T0 + timedelta(minutes=1), 10)
        assert [row.id for row in claimed] == ["firing-1:0"]
        seen, due = poll.owed(seen, T0)
        assert not due  # the claim was a commit, and it left nothing owed

        await _owe(service, 2, now=T0 + timedelta(minutes=5))  # owed later than ``now``
        seen, due = poll.owed(seen, T0)
        assert not due
        assert poll.owed(None, T0 + timedelta(minutes=5))[1]
    finally:
        poll.close()


async def test_the_watch_wakes_the_dispatcher_for_a_commit_on_sqlite(
    two: tuple[StateStore, StateStore],
) -> None:
    service, worker = two
    woken = asyncio.Event()
    watch = asyncio.create_task(_watch(worker.engine, SystemClock(), woken.set))
    try:
        # (That an empty outbox wakes no one is the poll's own test, above: no sleep here.)
        await _owe(service, 1, now=datetime.now(UTC))
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_a_commit_or_replay_owing_rows_notifies_listeners_on_postgresql(
    fresh_postgres_url: str,
) -> None:
    db = create_engine(fresh_postgres_url)
    state = StateStore(db)
    await state.create_tables()
    url = make_url(fresh_postgres_url).set(drivername="postgresql")
    listener = await asyncpg.connect(url.render_as_string(hide_password=False))
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(OUTBOX_CHANNEL, lambda *args: heard.put_nowait(args[2]))
    try:
        await state.commit_batch(
            processed=["quiet"], firings=[], intents=[], now=T0, checkpoint=None
        )
        await _owe(state, 1)
        assert await asyncio.wait_for(heard.get(), 10) == OUTBOX_CHANNEL
        assert heard.empty()  # the batch without intents notified no one

        claimed = await state.claim_due(T0, T0 + timedelta(minutes=1), 10)
        attempt = AttemptRow(
            outbox_id=claimed[0].id,
            attempt=1,
            at=T0,
            ok=True,
            retryable=False,
            latency_ms=1.0,
            target="-",
            reason="",
        )
        await state.record_attempts([Outcome(attempt, "sent", None, None)])
        assert await state.replay(claimed[0].id, T0) == "replayed"
        assert await asyncio.wait_for(heard.get(), 10) == OUTBOX_CHANNEL
    finally:
        await listener.close()
        await db.dispose()


async def test_the_worker_stores_unwatched_trail_and_hands_over_the_rest(
    tmp_path: Path, two: tuple[StateStore, StateStore]
) -> None:
    _, worker = two
    (tmp_path / "a.yaml").write_text(WATCHING)
    config = load_config([tmp_path / "a.yaml"], {})
    store = SqlEventStore(worker.engine)
    trail = _Trail(worker, store, SystemClock(), config, bus=None)
    watched = _trail_event("automation.action.executed", "etl")
    unwatched = _trail_event("automation.action.executed", "other")

    await trail.emit([watched, unwatched])
    assert [e.id for _, e in await worker.handed_trail()] == [watched.id]
    assert await store.get(unwatched.id) is not None
    assert await store.get(watched.id) is None  # the service stores and stamps it

    await worker.drop_trail([seq for seq, _ in await worker.handed_trail()])
    await worker.set_paused("etl", True)  # a pause-automation action in this pass
    later = _trail_event("automation.action.triggered", "other")
    await trail.emit([later])
    assert [e.id for _, e in await worker.handed_trail()] == [later.id]


async def test_the_service_ingests_the_handed_trail_into_its_engine(tmp_path: Path) -> None:
    async with running_service(tmp_path, env={}, yaml_text=WATCHING) as running:
        service = running.service
        version = service.state.paused_version
        worker = StateStore(service.db)
        handed = _trail_event("automation.action.executed", "etl")
        await worker.hand_trail([handed])

        async def ingested() -> list[Any]:
            while not (firings := await service.state.firings(automation="audit")):  # noqa: ASYNC110 (a table)
                await asyncio.sleep(0.01)
            return firings

        assert len(await asyncio.wait_for(ingested(), 10)) == 1
        # (The audit automation's own trail, from the dispatcher here, is about another.)
        stored = await service.store.query(EventQuery(resource_id="automation.etl"))
        assert [e.id for e in stored.events] == [handed.id]
        assert stored.events[0].received is not None  # stamped by the service
        assert await worker.handed_trail() == []  # drained
        assert service.state.paused_version > version  # flags re-read before the batch
