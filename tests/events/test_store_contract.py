"""The event store contract, run against SQLite (a file) and PostgreSQL (real server)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text

from events.database import create_engine, normalise_url, redact_url
from events.errors import StoreError
from events.model import Event
from events.sql_store import SqlEventStore
from events.store import EventQuery

PREFECT_SAMPLES = sorted((Path(__file__).parents[1] / "fixtures" / "prefect").glob("*.json"))
T0 = datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=UTC)


def prefect_events() -> list[Event]:
    return [Event.model_validate(json.loads(path.read_text())) for path in PREFECT_SAMPLES]


def make_event(
    name: str = "flow-run.Completed",
    occurred: datetime = T0,
    *,
    resource_id: str = "flow-run.1",
    received: datetime | None = None,
    payload: dict[str, object] | None = None,
    event_id: UUID | None = None,
) -> Event:
    return Event(
        id=event_id or uuid4(),
        occurred=occurred,
        event=name,
        resource={"resource.id": resource_id},
        payload=payload or {},
        received=received,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlEventStore]:
    engine = create_engine(store_url)
    sql_store = SqlEventStore(engine)
    await sql_store.start()
    if engine.dialect.name == "postgresql":  # one database per session: clean it per test
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE events RESTART IDENTITY"))
    try:
        yield sql_store
    finally:
        await sql_store.stop()
        await engine.dispose()


async def names_matching(store: SqlEventStore, pattern: str) -> set[str]:
    page = await store.query(EventQuery(name=pattern, limit=1000))
    return {item.event for item in page.events}


# -- insert / get --------------------------------------------------------------


async def test_prefect_events_round_trip_unchanged(store: SqlEventStore) -> None:
    """Every field of a real Prefect event (payload, related, origin, µs times) survives."""
    originals = prefect_events()
    assert await store.insert(originals) == [item.id for item in originals]
    for original in originals:
        stored = await store.get(original.id)
        assert stored == original
        assert stored is not None
        assert stored.to_prefect() == original.to_prefect()
        assert stored.occurred.microsecond == original.occurred.microsecond


async def test_timezone_offsets_keep_the_instant(store: SqlEventStore) -> None:
    """An occurred in +05:30 comes back unchanged (instant, µs, offset) and filters by instant."""
    india = timezone(timedelta(hours=5, minutes=30))
    original = make_event(occurred=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=india))
    await store.insert([original])
    stored = await store.get(original.id)
    assert stored is not None
    assert stored.occurred == original.occurred
    assert stored.occurred.utcoffset() == timedelta(hours=5, minutes=30)
    page = await store.query(
        EventQuery(since=original.occurred, until=original.occurred + timedelta(microseconds=1))
    )
    assert [item.id for item in page.events] == [original.id]


async def test_get_unknown_id_is_none(store: SqlEventStore) -> None:
    """get() of an id never stored returns None."""
    assert await store.get(uuid4()) is None


async def test_insert_nothing_returns_nothing(store: SqlEventStore) -> None:
    """An empty batch stores nothing and returns no ids."""
    assert await store.insert([]) == []


async def test_duplicate_ids_across_batches_are_ignored(store: SqlEventStore) -> None:
    """A known id is not stored again, not returned, and the original is kept unchanged."""
    original = make_event(payload={"version": 1})
    assert await store.insert([original]) == [original.id]
    impostor = make_event(event_id=original.id, name="flow-run.Failed", payload={"version": 2})
    fresh = make_event()
    assert await store.insert([impostor, fresh]) == [fresh.id]
    assert await store.get(original.id) == original
    page = await store.query(EventQuery())
    assert sorted(item.id for item in page.events) == sorted([original.id, fresh.id])


async def test_duplicate_ids_within_a_batch_are_stored_once(store: SqlEventStore) -> None:
    """A batch repeating an id stores its first copy once and returns new ids in input order."""
    first, second = make_event(payload={"copy": 1}), make_event()
    again = make_event(event_id=first.id, payload={"copy": 2})
    assert await store.insert([first, second, again, second]) == [first.id, second.id]
    assert await store.get(first.id) == first
    assert len((await store.query(EventQuery())).events) == 2


async def test_large_batch_is_stored_whole(store: SqlEventStore) -> None:
    """A batch larger than one INSERT statement is stored completely, ids in input order."""
    batch = [make_event(occurred=T0 + timedelta(seconds=i)) for i in range(1200)]
    assert await store.insert(batch) == [item.id for item in batch]
    assert len((await store.query(EventQuery(limit=1000))).events) == 1000


# -- query -----------------------------------------------------------------------

NAMES = [
    "flow-run.Failed",
    "flow-run.Completed",
    "flow-run.Fail",
    "task-run.Failed",
    "Flow-Run.Failed",
    "deployment.not-ready",
    "weird%name",
    "weirdXname",
    "under_score",
    "underXscore",
    "back\\slash",
    "br[a]cket",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("flow-run.*", {"flow-run.Failed", "flow-run.Completed", "flow-run.Fail"}),
        ("*Failed", {"flow-run.Failed", "task-run.Failed", "Flow-Run.Failed"}),
        ("flow-run.Fail*", {"flow-run.Failed", "flow-run.Fail"}),
        ("flow-run.Failed*", {"flow-run.Failed"}),
        ("*flow-run.Failed*", {"flow-run.Failed"}),
        ("flow-run.Fai?", {"flow-run.Fail"}),
        ("?low-run.Failed", {"flow-run.Failed"}),
        ("Flow-Run.*", {"Flow-Run.Failed"}),
        ("flow-run.failed", set()),
        ("flow-run.Failed", {"flow-run.Failed"}),
        ("weird%name", {"weird%name"}),
        ("weird%*", {"weird%name"}),
        ("under_score", {"under_score"}),
        ("under_*", {"under_score"}),
        ("back\\*", {"back\\slash"}),
        ("br[a]*", {"br[a]cket"}),
        ("*", set(NAMES)),
    ],
)
async def test_query_by_name_glob(store: SqlEventStore, pattern: str, expected: set[str]) -> None:
    """Name globs: * is any run (even empty), ? one char, %/_/\\/[ literal, case-sensitive."""
    await store.insert([make_event(name) for name in NAMES])
    assert await names_matching(store, pattern) == expected


async def test_query_by_exact_resource_id(store: SqlEventStore) -> None:
    """resource_id matches exactly: no glob, no prefix match."""
    mine = make_event(resource_id="flow-run.1")
    await store.insert([mine, make_event(resource_id="flow-run.10")])
    page = await store.query(EventQuery(resource_id="flow-run.1"))
    assert [item.id for item in page.events] == [mine.id]
    assert (await store.query(EventQuery(resource_id="flow-run.*"))).events == []


async def test_query_by_time_range(store: SqlEventStore) -> None:
    """since is inclusive, until exclusive, both on occurred; newest first."""
    batch = [make_event(occurred=T0 + timedelta(minutes=i)) for i in range(5)]
    await store.insert(batch)
    page = await store.query(
        EventQuery(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4))
    )
    assert [item.id for item in page.events] == [batch[3].id, batch[2].id, batch[1].id]


async def test_query_combines_filters(store: SqlEventStore) -> None:
    """Name, resource and time filters all apply together."""
    wanted = make_event("flow-run.Failed", T0, resource_id="flow-run.a")
    await store.insert(
        [
            wanted,
            make_event("flow-run.Failed", T0, resource_id="flow-run.b"),
            make_event("flow-run.Completed", T0, resource_id="flow-run.a"),
            make_event("flow-run.Failed", T0 - timedelta(days=1), resource_id="flow-run.a"),
        ]
    )
    page = await store.query(
        EventQuery(name="*.Failed", resource_id="flow-run.a", since=T0 - timedelta(hours=1))
    )
    assert [item.id for item in page.events] == [wanted.id]


async def test_pagination_sees_each_event_once_in_order(store: SqlEventStore) -> None:
    """Paging 250 events (with tied timestamps) by cursor yields each once, newest first."""
    batch = [make_event(occurred=T0 + timedelta(seconds=i // 3)) for i in range(250)]
    await store.insert(batch)
    seen: list[UUID] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.query(EventQuery(limit=100, cursor=cursor))
        seen.extend(item.id for item in page.events)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    # Newest first; among equal occurred, the later insert first.
    assert seen == [item.id for item in reversed(batch)]


async def test_cursor_is_stable_when_newer_events_arrive(store: SqlEventStore) -> None:
    """Events inserted after a page was read do not shift the following pages."""
    batch = [make_event(occurred=T0 + timedelta(seconds=i)) for i in range(10)]
    await store.insert(batch)
    first = await store.query(EventQuery(limit=4))
    await store.insert([make_event(occurred=T0 + timedelta(hours=1))])
    second = await store.query(EventQuery(limit=4, cursor=first.next_cursor))
    assert [item.id for item in second.events] == [item.id for item in reversed(batch[2:6])]


async def test_last_page_has_no_cursor(store: SqlEventStore) -> None:
    """A page that holds the rest of the results has next_cursor None."""
    await store.insert([make_event() for _ in range(3)])
    page = await store.query(EventQuery(limit=3))
    assert len(page.events) == 3
    assert page.next_cursor is None


async def test_limit_is_capped_at_1000(store: SqlEventStore) -> None:
    """A limit above 1000 returns 1000 events and a cursor to the rest."""
    await store.insert([make_event(occurred=T0 + timedelta(seconds=i)) for i in range(1001)])
    page = await store.query(EventQuery(limit=5000))
    assert len(page.events) == 1000
    assert page.next_cursor is not None
    rest = await store.query(EventQuery(limit=5000, cursor=page.next_cursor))
    assert len(rest.events) == 1


@pytest.mark.parametrize("cursor", ["", "not base64!", "bm9waXBl", "eHx5", "MjAyNi0wMS0wMXwx"])
async def test_malformed_cursor_is_a_value_error(store: SqlEventStore, cursor: str) -> None:
    """A cursor that no page produced raises ValueError saying what to pass instead."""
    with pytest.raises(ValueError, match="malformed cursor"):
        await store.query(EventQuery(cursor=cursor))


def _encoded(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _encoded(f"2026-01-01T00:00:00+00:00|{2**63}"),  # past BIGINT: no comparison
        _encoded("0001-01-01T00:00:00+05:00|1"),  # no UTC reading
        _encoded("2026-01-01T00:00:00|1"),  # no timezone
    ],
)
async def test_out_of_range_cursor_is_a_value_error(store: SqlEventStore, cursor: str) -> None:
    """A cursor no page produced, even well formed, raises ValueError (not a driver error)."""
    with pytest.raises(ValueError, match="malformed cursor"):
        await store.query(EventQuery(cursor=cursor))


@pytest.mark.parametrize(
    ("query", "named"),
    [
        (EventQuery(since=datetime(2026, 1, 1)), "since"),
        (EventQuery(until=datetime(2026, 1, 1)), "until"),
        (EventQuery(since=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))), "since"),
        (
            EventQuery(until=datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))),
            "until",
        ),
    ],
)
async def test_unusable_time_bounds_are_value_errors(
    store: SqlEventStore, query: EventQuery, named: str
) -> None:
    """since/until without a timezone or out of range in UTC: ValueError naming the bound."""
    with pytest.raises(ValueError, match=f"^{named} "):
        await store.query(query)


# -- replay / prune ----------------------------------------------------------------


async def test_replay_in_arrival_order_after_watermark(store: SqlEventStore) -> None:
    """replay() orders by received then insertion, strictly after the watermark."""
    r = T0 + timedelta(hours=1)
    late = make_event(occurred=T0, received=r + timedelta(seconds=2))
    early = make_event(occurred=T0 + timedelta(minutes=5), received=r)
    tie_a = make_event(received=r + timedelta(seconds=1))
    tie_b = make_event(received=r + timedelta(seconds=1))
    await store.insert([late, early, tie_a, tie_b])
    everything = await store.replay(None)
    assert [item.id for item in everything] == [early.id, tie_a.id, tie_b.id, late.id]
    after = await store.replay(r + timedelta(seconds=1))
    assert [item.id for item in after] == [late.id]
    assert [item.id for item in await store.replay(r, limit=2)] == [tie_a.id, tie_b.id]
    assert await store.replay(r + timedelta(seconds=2)) == []


async def test_replay_keeps_received(store: SqlEventStore) -> None:
    """Replayed events carry the received stamp they were stored with."""
    original = make_event(received=T0 + timedelta(seconds=1, microseconds=7))
    await store.insert([original])
    assert [item.received for item in await store.replay(None)] == [original.received]


async def test_prune_deletes_only_older_events(store: SqlEventStore) -> None:
    """prune() deletes occurred < cutoff, returns the count and keeps the cutoff instant."""
    old = [make_event(occurred=T0 - timedelta(days=d)) for d in (1, 2, 3)]
    at_cutoff = make_event(occurred=T0)
    await store.insert([*old, at_cutoff])
    assert await store.prune(T0) == 3
    assert await store.prune(T0) == 0
    assert [item.id for item in (await store.query(EventQuery())).events] == [at_cutoff.id]
    # A pruned id can be stored again: retention is not a tombstone.
    assert await store.insert([old[0]]) == [old[0].id]


# -- failures and durability ------------------------------------------------------


async def test_database_errors_become_store_errors_without_password() -> None:
    """An unreachable database raises StoreError naming the action, never the password."""
    engine = create_engine("postgresql://runbell:s3cret-pw@127.0.0.1:1/runbell")
    store = SqlEventStore(engine)
    try:
        with pytest.raises(StoreError, match="inserting 1 events") as caught:
            await store.insert([make_event()])
        assert "s3cret-pw" not in str(caught.value)
        assert isinstance(caught.value.__cause__, Exception)
    finally:
        await engine.dispose()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from uuid import UUID
    from events.sql_store import SqlEventStore
    from events.database import create_engine
    from events.model import Event

    async def main() -> None:
        store = SqlEventStore(create_engine(sys.argv[1]))
        await store.start()
        event = Event(
            id=UUID(sys.argv[2]),
            occurred=datetime(2026, 1, 1, tzinfo=UTC),
            event="flow-run.Completed",
            resource={"resource.id": "flow-run.kill"},
        )
        await store.insert([event])
        print("inserted", flush=True)
        sys.stdin.readline()  # wait here to be killed

    asyncio.run(main())
    """
)


def _insert_then_kill_9(url: str, event_id: UUID) -> int:
    """Run a writer process until its insert() returns, then SIGKILL it; its exit code."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(event_id)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "inserted"
        writer.send_signal(signal.SIGKILL)
        return writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=30)
        for stream in (writer.stdin, writer.stdout):
            if stream is not None:
                stream.close()


async def test_insert_is_durable_across_kill_9(store: SqlEventStore, store_url: str) -> None:
    """Once insert() returns, the event survives a kill -9 of the writing process."""
    event_id = uuid4()
    assert await asyncio.to_thread(_insert_then_kill_9, store_url, event_id) == -signal.SIGKILL
    stored = await store.get(event_id)
    assert stored is not None
    assert stored.resource_id == "flow-run.kill"


# -- database URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///./runbell.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///./runbell.db", "sqlite+aiosqlite"),
        ("postgresql://u@127.0.0.1/db", "postgresql+asyncpg"),
        ("postgres://u@127.0.0.1/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@127.0.0.1/db", "postgresql+asyncpg"),
    ],
)
def test_database_urls_use_async_drivers(given: str, driver: str) -> None:
    """Accepted database URLs are normalised to aiosqlite / asyncpg."""
    assert normalise_url(given).drivername == driver


@pytest.mark.parametrize("given", ["mysql://u:pw@h/db", "not a url", "postgresql+psycopg2://h/db"])
def test_unsupported_database_url_is_a_value_error(given: str) -> None:
    """Anything but SQLite or PostgreSQL is refused with a clear ValueError."""
    with pytest.raises(ValueError, match="use sqlite"):
        normalise_url(given)


@pytest.mark.parametrize(
    "given",
    [
        "postgresql+asyncpg://runbell:s3cret-pw@db.internal:5432/runbell",
        "postgresql://runbell:s3cret-pw@/runbell?host=/run/pg",
        "weird://runbell:s3cret-pw@host:notaport/x",
    ],
)
def test_redact_url_hides_the_password(given: str) -> None:
    """redact_url masks the password and keeps the rest readable."""
    shown = redact_url(given)
    assert "s3cret-pw" not in shown
    assert "runbell" in shown


async def test_sqlite_connections_use_wal_and_normal_sync(tmp_path: Path) -> None:
    """SQLite runs in WAL with synchronous=NORMAL, a busy timeout and foreign keys on."""
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
            foreign = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
        assert (journal, synchronous, foreign) == ("wal", 1, 1)
        assert busy is not None
        assert busy > 0
    finally:
        await engine.dispose()
