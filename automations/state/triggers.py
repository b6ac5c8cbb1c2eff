"""Durable trigger state: buckets and composites, held followers, the event clock.

Written in the same transaction as the batch's firings and intents (see
:meth:`automations.state.StateStore.commit_batch`'s ``extra`` hook), so a restart
resumes exactly where the last committed batch left off.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import TypeAdapter
from sqlalchemy import Column, String, Text, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from automations.core.buckets import Bucket
from automations.core.metrics import MetricWindow
from automations.core.triggers import Composite, Entry, EventClock, Held
from automations.state.model import driver_executemany, driver_insert, insert_ignore
from events.database import UtcDateTime, driver_time

_CLOCK = TypeAdapter(EventClock)
_ENTRY_COLUMNS = ("automation", "key", "entry", "deadline")
_ENTRY_UPSERT = (
    "ON CONFLICT (automation, key) DO UPDATE SET entry = excluded.entry, "
    "deadline = excluded.deadline"
)
_META_UPSERT = "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
_HELD_COLUMNS = ("event_id", "scope", "follows", "arrival", "event")
_ENTRY_DELETE = (  # [PostgreSQL, SQLite]
    "DELETE FROM trigger_state WHERE automation = $1 AND key = $2",
    "DELETE FROM trigger_state WHERE automation = ? AND key = ?",
)
_ENTRY: TypeAdapter[Bucket | Composite | MetricWindow] = TypeAdapter(Entry)


class TriggerStateRow(SQLModel, table=True):
    __tablename__ = "trigger_state"

    automation: str = Field(primary_key=True, max_length=512)
    key: str = Field(primary_key=True, max_length=2000)
    entry: str = Field(sa_column=Column(Text, nullable=False))
    deadline: datetime | None = Field(
        default=None, sa_column=Column(UtcDateTime(), nullable=True, index=True)
    )


class HeldEventRow(SQLModel, table=True):
    __tablename__ = "held_events"

    event_id: str = Field(primary_key=True, max_length=36)
    scope: str = Field(  # the engine shard holding it
        default="", sa_column=Column(String(200), nullable=False, server_default="", index=True)
    )
    follows: str = Field(max_length=36, index=True)
    arrival: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    event: str = Field(sa_column=Column(Text, nullable=False))


class EngineMetaRow(SQLModel, table=True):
    __tablename__ = "engine_meta"

    name: str = Field(primary_key=True, max_length=200)
    value: str = Field(sa_column=Column(String(4000), nullable=False))


@dataclass
class Pending:
    """What one batch changed, to be written with its firings."""

    entries: dict[tuple[str, str], Bucket | Composite | MetricWindow | None] = field(
        default_factory=dict
    )
    held_added: dict[str, Held] = field(default_factory=dict)
    held_removed: set[str] = field(default_factory=set)
    clock: EventClock | None = None

    def __bool__(self) -> bool:
        return bool(self.entries or self.held_added or self.held_removed or self.clock)


@dataclass
class Loaded:
    states: dict[str, dict[str, Bucket | Composite | MetricWindow]]
    held: dict[str, Held]
    clock: EventClock


def _clock_name(scope: str) -> str:
    return f"clock/{scope}" if scope else "clock"


async def load(
    engine: AsyncEngine, scope: str = "", automations: Collection[str] | None = None
) -> Loaded:
    """Everything one engine scope left behind ("" = the one embedded engine);
    ``automations``: only those automations' entries (a shard's own)."""
    states: dict[str, dict[str, Bucket | Composite | MetricWindow]] = {}
    held: dict[str, Held] = {}
    clock = EventClock()
    entries = TriggerStateRow.__table__  # type: ignore[attr-defined]
    held_table = HeldEventRow.__table__  # type: ignore[attr-defined]
    meta = EngineMetaRow.__table__  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        query = select(entries)
        if automations is not None:
            query = query.where(entries.c.automation.in_(list(automations)))
        for row in await conn.execute(query):
            states.setdefault(row.automation, {})[row.key] = _ENTRY.validate_json(row.entry)
        for row in await conn.execute(select(held_table).where(held_table.c.scope == scope)):
            held[row.event_id] = Held(row.follows, row.arrival, row.event)
        clock_name = _clock_name(scope)
        found = (await conn.execute(select(meta.c.value).where(meta.c.name == clock_name))).first()
    if found:
        clock = _CLOCK.validate_json(found[0])
    return Loaded(states, held, clock)


async def write(conn: AsyncConnection, pending: Pending, scope: str = "") -> None:
    """Apply ``pending`` inside the caller's transaction."""
    held_table = HeldEventRow.__table__  # type: ignore[attr-defined]
    # Entries and the clock change with every batch: driver-level statements (see
    # automations.state.model.driver_insert), one executemany each.
    dialect = conn.dialect.name
    deletes, upserts = _entry_rows(pending, dialect)
    if deletes:
        await driver_executemany(conn, _ENTRY_DELETE[dialect == "sqlite"], deletes)
    if upserts:
        sql = driver_insert(dialect, "trigger_state", _ENTRY_COLUMNS, 1, _ENTRY_UPSERT)
        await driver_executemany(conn, sql, upserts)
    if pending.held_removed:
        await conn.execute(
            held_table.delete().where(held_table.c.event_id.in_(list(pending.held_removed)))
        )
    added = [
        {
            "event_id": i,
            "scope": scope,
            "follows": h.follows,
            "arrival": h.arrival,
            "event": h.event,
        }
        for i, h in pending.held_added.items()
        if i not in pending.held_removed
    ]
    if added:
        await conn.execute(insert_ignore(conn, held_table).on_conflict_do_nothing(), added)
    if pending.clock is not None:
        await _put_meta(conn, _clock_name(scope), _CLOCK.dump_json(pending.clock).decode())


def _entry_rows(
    pending: Pending, dialect: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, datetime | str | None]]]:
    """(automation, key) of the entries deleted; rows of those upserted."""
    deletes = [key for key, entry in pending.entries.items() if entry is None]
    upserts = [
        (
            automation,
            key,
            _ENTRY.dump_json(entry).decode(),
            driver_time(entry.deadline, dialect)
            if isinstance(entry, Bucket) and entry.deadline is not None
            else None,
        )
        for (automation, key), entry in pending.entries.items()
        if entry is not None
    ]
    return deletes, upserts


def write_sqlite(connection: sqlite3.Connection, pending: Pending, scope: str = "") -> None:
    """:func:`write` on a ``sqlite3`` connection, inside its open transaction."""
    deletes, upserts = _entry_rows(pending, "sqlite")
    if deletes:
        connection.executemany(_ENTRY_DELETE[True], deletes)
    if upserts:
        sql = driver_insert("sqlite", "trigger_state", _ENTRY_COLUMNS, 1, _ENTRY_UPSERT)
        connection.executemany(sql, upserts)
    if pending.held_removed:
        connection.executemany(
            "DELETE FROM held_events WHERE event_id = ?", [(i,) for i in pending.held_removed]
        )
    added = [
        (i, scope, h.follows, driver_time(h.arrival, "sqlite"), h.event)
        for i, h in pending.held_added.items()
        if i not in pending.held_removed
    ]
    if added:
        sql = driver_insert("sqlite", "held_events", _HELD_COLUMNS, 1, "ON CONFLICT DO NOTHING")
        connection.executemany(sql, added)
    if pending.clock is not None:
        sql = driver_insert("sqlite", "engine_meta", ("name", "value"), 1, _META_UPSERT)
        value = _CLOCK.dump_json(pending.clock).decode()
        connection.execute(sql, (_clock_name(scope), value))


@dataclass(frozen=True)
class StateWrite:
    """``commit_batch``'s ``extra`` hook writing ``pending``: :func:`write` through
    SQLAlchemy, or :func:`write_sqlite` when the whole batch runs on ``sqlite3``."""

    pending: Pending
    scope: str = ""

    async def __call__(self, conn: AsyncConnection) -> None:
        await write(conn, self.pending, self.scope)

    def sqlite(self, connection: sqlite3.Connection) -> None:
        write_sqlite(connection, self.pending, self.scope)


async def _put_meta(conn: AsyncConnection, name: str, value: str) -> None:
    sql = driver_insert(conn.dialect.name, "engine_meta", ("name", "value"), 1, _META_UPSERT)
    await driver_executemany(conn, sql, [(name, value)])


def merge(
    pending: Pending,
    automation: str,
    changes: Mapping[str, Bucket | Composite | MetricWindow | None],
) -> None:
    for key, entry in changes.items():
        pending.entries[(automation, key)] = entry
