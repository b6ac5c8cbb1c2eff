"""``commit_batch`` on both dialects: the driver-level inserts write what SQLAlchemy would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import insert, select

from automations.state import Firing, Intent, StateStore
from automations.state.engine import AlreadyProcessed
from automations.state.model import (
    _OUTBOX_COLUMNS,
    FIRING_COLUMNS,
    FiringRow,
    OutboxRow,
    firing_row,
    intent_row,
)
from events.database import create_engine

T0 = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


@pytest.fixture
async def store(url: str) -> AsyncIterator[StateStore]:
    db = create_engine(url)
    state = StateStore(db)
    await state.create_tables()
    yield state
    await db.dispose()


def firing(n: int, **changes: Any) -> Firing:
    fields: dict[str, Any] = {
        "id": f"firing-{n}",
        "automation": "etl",
        "state": "triggered",
        "at": (T0 + timedelta(seconds=n)).astimezone(PLUS2),  # stored as UTC
        "bucket": {"resource.id": f"flow-run.{n}"},
        "event_ids": [str(UUID(int=n))],
        "context": {"muted": None, "events": [{"id": str(UUID(int=n)), "n": n, "ü": "ß"}]},
        "silenced": n % 2 == 0,
    }
    return Firing(**{**fields, **changes})


async def commit(store: StateStore, ids: list[int], firings: list[Firing], **kw: Any) -> None:
    await store.commit_batch(
        processed=[UUID(int=i) for i in ids],
        firings=firings,
        intents=[Intent(f.id, f.automation, 0, {"type": "notify", "n": 1}) for f in firings],
        now=T0,
        checkpoint=("engine", T0 + timedelta(minutes=1)),
        **kw,
    )


async def rows(store: StateStore, table: Any) -> dict[str, dict[str, Any]]:
    async with store.engine.connect() as conn:
        found = await conn.execute(select(table).order_by(table.c.id))
        return {r.id: dict(r._mapping) for r in found}


def test_the_driver_columns_are_the_tables() -> None:
    firings = FiringRow.__table__  # type: ignore[attr-defined]
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    assert set(FIRING_COLUMNS) == {c.name for c in firings.columns}
    assert set(_OUTBOX_COLUMNS) == {c.name for c in outbox.columns} - {"ref"}


async def test_rows_read_back_as_sqlalchemy_writes_them(store: StateStore) -> None:
    """The same firing and intent, once through commit_batch, once through SQLAlchemy."""
    ours, theirs = firing(1), firing(2)
    await commit(store, [1], [ours])
    firings = FiringRow.__table__  # type: ignore[attr-defined]
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    async with store.engine.begin() as conn:
        await conn.execute(insert(firings), [firing_row(theirs)])
        intent = Intent(theirs.id, theirs.automation, 0, {"type": "notify", "n": 1})
        await conn.execute(insert(outbox), [intent_row(intent, T0)])

    stored = await rows(store, firings)
    assert stored["firing-1"] == {**firing_row(ours), "at": ours.at.astimezone(UTC)}
    assert {k: v for k, v in stored["firing-2"].items() if k not in {"id", "at"}} == {
        k: v for k, v in stored["firing-1"].items() if k not in {"id", "at"}
    } | {
        "bucket": theirs.bucket,
        "event_ids": theirs.event_ids,
        "context": theirs.context,
        "silenced": True,
    }
    assert await store.firing("firing-1") == Firing(
        **{**firing_row(ours), "context": {**ours.context, "event": ours.context["events"][0]}}
    )
    queued = await rows(store, outbox)
    a, b = queued["firing-1:0"], queued["firing-2:0"]
    assert a["created_at"] == a["next_attempt_at"] == T0
    assert {k: v for k, v in a.items() if "id" not in k} == {
        k: v for k, v in b.items() if "id" not in k
    }
    assert await store.checkpoint("engine") == T0 + timedelta(minutes=1)
    assert await store.unprocessed([UUID(int=1), UUID(int=9)]) == {UUID(int=9)}

    async with store.engine.connect() as conn:  # the raw column text, too
        raw = (await conn.exec_driver_sql("SELECT at FROM firings ORDER BY id")).all()
        due = (await conn.exec_driver_sql("SELECT created_at FROM action_outbox ORDER BY id")).all()
    assert [type(r[0]) for r in raw] == [type(raw[1][0])] * 2
    assert due[0][0] == due[1][0]


async def test_a_redelivered_id_rolls_the_optimistic_batch_back(store: StateStore) -> None:
    await commit(store, [1, 2], [firing(1)])
    with pytest.raises(AlreadyProcessed) as caught:
        await commit(store, [2, 3, 4], [firing(3)], require_fresh=True)
    assert caught.value.fresh == {str(UUID(int=3)), str(UUID(int=4))}
    assert await store.firing("firing-3") is None
    assert await store.unprocessed([UUID(int=i) for i in (2, 3, 4)]) == {UUID(int=3), UUID(int=4)}
    # Without require_fresh the known id is ignored and the rest is written.
    await commit(store, [2, 3, 4], [firing(1), firing(3)])
    assert set(await rows(store, FiringRow.__table__)) == {"firing-1", "firing-3"}  # type: ignore[attr-defined]
    assert await store.unprocessed([UUID(int=i) for i in range(1, 6)]) == {UUID(int=5)}


async def test_many_fresh_ids_in_one_batch(store: StateStore) -> None:
    ids = list(range(1, 1202))  # more than one multi-row statement
    await commit(store, ids, [], require_fresh=True)
    assert await store.unprocessed([UUID(int=i) for i in (1, 600, 1201, 1202)]) == {UUID(int=1202)}


async def test_a_naive_time_is_refused_and_nothing_is_written(store: StateStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        await commit(store, [1], [firing(1, at=datetime(2026, 11, 21, 10, 0))])
    assert await store.unprocessed([UUID(int=1)]) == {UUID(int=1)}
    assert await store.firing("firing-1") is None


async def test_trigger_state_written_with_the_batch_loads_back(store: StateStore) -> None:
    """StateWrite on SQLite (one sqlite3 transaction) and PostgreSQL (SQLAlchemy)."""
    from automations.core.buckets import Bucket
    from automations.core.triggers import EventClock, Held
    from automations.state import triggers as trigger_store
    from automations.state.triggers import Pending

    first = Pending(
        entries={
            ("etl", '["trigger","a"]'): Bucket(start=T0, end=T0, count=1, deadline=T0),
            ("etl", '["trigger","b"]'): Bucket(start=T0, count=2),
        },
        held_added={"h1": Held("lead", T0.astimezone(PLUS2), "{}"), "h2": Held("x", T0, "{}")},
        clock=EventClock(T0, T0),
    )
    await commit(store, [1], [], extra=trigger_store.StateWrite(first, "shard/1"))
    later = T0 + timedelta(minutes=5)
    second = Pending(
        entries={("etl", '["trigger","a"]'): None, ("etl", '["trigger","c"]'): Bucket(count=3)},
        held_removed={"h2"},
        clock=EventClock(later, later),
    )
    await commit(store, [2], [], extra=trigger_store.StateWrite(second, "shard/1"))

    loaded = await trigger_store.load(store.engine, "shard/1")
    assert loaded.states == {
        "etl": {'["trigger","b"]': Bucket(start=T0, count=2), '["trigger","c"]': Bucket(count=3)}
    }
    assert loaded.held == {"h1": Held("lead", T0, "{}")}
    assert loaded.clock == EventClock(later, later)
    other = await trigger_store.load(store.engine, "shard/2")
    assert (other.held, other.clock) == ({}, EventClock())
