"""The state tables and the records passed in and out of ``StateStore``.

Shared by the engine side (``_state_engine``), the delivery side
(``_state_delivery``) and notification grouping (``_state_grouping``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Integer,
    Select,
    String,
    Text,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateColumn
from sqlmodel import Field, SQLModel

from automations.core.grouping import GroupingState
from events.database import UtcDateTime, driver_bool, driver_json, driver_time
from events.database import (
    driver_insert as driver_insert,  # the engine and trigger store import it here
)


class FiringRow(SQLModel, table=True):
    __tablename__ = "firings"

    id: str = Field(primary_key=True, max_length=64)
    automation: str = Field(index=True, max_length=512)
    state: str = Field(max_length=16)  # triggered | resolved
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    bucket: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    event_ids: list[str] = Field(sa_column=Column(JSON, nullable=False))
    silenced: bool = False
    context: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class OutboxRow(SQLModel, table=True):
    __tablename__ = "action_outbox"

    id: str = Field(primary_key=True, max_length=80)  # "<firing id>:<action index>"
    firing_id: str = Field(index=True, max_length=64)
    automation: str = Field(max_length=512)
    action_index: int
    action: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(index=True, max_length=16)  # pending | sending | sent | dead
    attempts: int = 0
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    last_error: str | None = Field(default=None, sa_column=Column(String(2000), nullable=True))
    # What a successful send created (Slack: {"channel", "ts"}), for a later resolve.
    ref: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Bumped by each replay: attempts of one series share it (see StateStore.replay).
    series: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class AttemptRow(SQLModel, table=True):
    __tablename__ = "delivery_attempts"

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(sqlite.INTEGER(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    outbox_id: str = Field(index=True, max_length=80)
    attempt: int
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    ok: bool
    retryable: bool
    status_code: int | None = None
    latency_ms: float
    target: str = Field(max_length=2000)
    reason: str = Field(max_length=2000)
    series: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class PausedRow(SQLModel, table=True):
    """An automation paused by a ``pause-automation`` action (the engine skips it)."""

    __tablename__ = "automation_paused"

    name: str = Field(primary_key=True, max_length=512)


class ProcessedRow(SQLModel, table=True):
    __tablename__ = "processed_events"

    event_id: str = Field(primary_key=True, max_length=36)
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))


class EngineScopeRow(SQLModel, table=True):
    """One engine shard's ownership epoch: a new owner bumps it, a stale one is fenced."""

    __tablename__ = "engine_scopes"

    scope: str = Field(primary_key=True, max_length=200)
    epoch: int = Field(default=0, nullable=False)


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "engine_checkpoints"

    name: str = Field(primary_key=True, max_length=200)
    received: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class GroupRow(SQLModel, table=True):
    """One open notification group (``automations/core/grouping.py``), persisted between flushes."""

    __tablename__ = "notify_groups"

    id: str = Field(primary_key=True, max_length=64)  # sha256 of the group key
    automation: str = Field(index=True, max_length=512)
    action_index: int
    next_flush: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    # GroupingState JSON holding this one group (its key included).
    state: str = Field(sa_column=Column(Text, nullable=False))


@dataclass(frozen=True, slots=True)
class Firing:
    id: str
    automation: str
    state: str
    at: datetime
    bucket: dict[str, str]
    event_ids: list[str]
    context: dict[str, Any]  # what templates see: the triggering events, JSON-shaped
    silenced: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished delivery attempt and what it means for its outbox row."""

    attempt: AttemptRow
    status: str  # sent | pending (retry later) | dead
    next_attempt_at: datetime | None
    error: str | None
    ref: dict[str, str] | None = None  # stored on the outbox row when given
    spawn: tuple[Intent, ...] = ()  # follow-up intents (a fallback), inserted with the outcome


@dataclass(frozen=True, slots=True)
class Intent:
    """One action owed for one firing."""

    firing_id: str
    automation: str
    action_index: int
    action: dict[str, Any]
    suffix: str = ""  # ":fallback" for the intent a dead notify hands to its fallback channel

    @property
    def id(self) -> str:
        return f"{self.firing_id}:{self.action_index}{self.suffix}"


@dataclass(frozen=True, slots=True)
class OwedDigest:
    """A group's digest owed as an outbox row whose id is the digest's idempotency key."""

    id: str
    automation: str
    action_index: int
    action: dict[str, Any]
    at: datetime  # created and due


@dataclass(frozen=True, slots=True)
class GroupingChange:
    """What one grouping step writes, atomically (:meth:`StateStore.change_grouping`).

    ``state``: the new state of the groups the step was given (absent = removed);
    ``grouped``: attempts of intents taken into a group (their rows become
    ``grouped``, a terminal status); ``firings`` + ``digests``: digests owed (the
    digest firing shares the digest's id).
    """

    state: GroupingState
    grouped: Sequence[Outcome] = ()
    firings: Sequence[Firing] = ()
    digests: Sequence[OwedDigest] = ()


def insert_ignore(conn: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# -- the engine's hot statements, sent to the driver as they are ---------------------------
# One executemany of pre-encoded tuples per table and batch: no SQLAlchemy compile, bind
# processing or result wrapping per row, and on SQLite one thread hop per statement.
# They run on the caller's connection, inside its transaction.


async def driver_executemany(
    conn: AsyncConnection, sql: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``sql`` once per row inside ``conn``'s transaction."""
    if conn.dialect.name == "sqlite":
        # aiosqlite: one hop to its thread (SQLAlchemy's cursor adapter takes three); the
        # sqlite3 connection is the one SQLAlchemy's transaction runs on.
        raw = await conn.get_raw_connection()
        await raw.driver_connection.executemany(sql, rows)  # type: ignore[union-attr]
    else:
        await conn.exec_driver_sql(sql, list(rows))


async def driver_fetchall(
    conn: AsyncConnection, sql: str, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """Run ``sql`` once inside ``conn``'s transaction and return its rows."""
    if conn.dialect.name == "sqlite":
        raw = await conn.get_raw_connection()
        found = await raw.driver_connection.execute_fetchall(sql, params)  # type: ignore[union-attr]
        return [tuple(row) for row in found]
    return [tuple(row) for row in (await conn.exec_driver_sql(sql, params)).all()]


FIRING_COLUMNS = ("id", "automation", "state", "at", "bucket", "event_ids", "silenced", "context")
_OUTBOX_COLUMNS = (
    "id",
    "firing_id",
    "automation",
    "action_index",
    "action",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "last_error",
    "series",
)


def firings_insert(dialect: str) -> str:
    return driver_insert(dialect, "firings", FIRING_COLUMNS, 1, "ON CONFLICT DO NOTHING")


def outbox_insert(dialect: str) -> str:
    return driver_insert(dialect, "action_outbox", _OUTBOX_COLUMNS, 1, "ON CONFLICT DO NOTHING")


def firing_values(firing: Firing, dialect: str) -> tuple[Any, ...]:
    """:func:`firing_row` encoded for :func:`firings_insert`."""
    return (
        firing.id,
        firing.automation,
        firing.state,
        driver_time(firing.at, dialect),
        driver_json(firing.bucket),
        driver_json(firing.event_ids),
        driver_bool(firing.silenced, dialect),
        driver_json(firing.context),
    )


def intent_values(intent: Intent, at: datetime | str, dialect: str) -> tuple[Any, ...]:
    """:func:`intent_row` encoded for :func:`outbox_insert`; ``at`` already encoded."""
    return (
        intent.id,
        intent.firing_id,
        intent.automation,
        intent.action_index,
        driver_json(intent.action),
        "pending",
        0,
        at,
        at,
        None,
        0,
    )


class StoreBase:
    """The database every part of ``StateStore`` works on."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine


OWED = ("pending", "sending")
"""Outbox statuses still owed an attempt ('sending' may be in doubt after a crash)."""


def firing_row(firing: Firing) -> dict[str, Any]:
    return {
        "id": firing.id,
        "automation": firing.automation,
        "state": firing.state,
        "at": firing.at,
        "bucket": firing.bucket,
        "event_ids": firing.event_ids,
        "silenced": firing.silenced,
        "context": firing.context,
    }


def outbox_row(
    *, id: str, firing_id: str, automation: str, action_index: int, action: Any, at: datetime
) -> dict[str, Any]:
    """A new outbox row, owed at ``at``."""
    return {
        "id": id,
        "firing_id": firing_id,
        "automation": automation,
        "action_index": action_index,
        "action": action,
        "status": "pending",
        "attempts": 0,
        "created_at": at,
        "next_attempt_at": at,
        "last_error": None,
        "series": 0,
    }


def intent_row(intent: Intent, now: datetime) -> dict[str, Any]:
    return outbox_row(
        id=intent.id,
        firing_id=intent.firing_id,
        automation=intent.automation,
        action_index=intent.action_index,
        action=intent.action,
        at=now,
    )


def firing_of(row: Any) -> Firing:
    return Firing(
        id=row["id"],
        automation=row["automation"],
        state=row["state"],
        at=row["at"],
        bucket=row["bucket"],
        event_ids=row["event_ids"],
        context=_with_event(row["context"]),
        silenced=row["silenced"],
    )


def as_read(firing: Firing) -> Firing:
    """``firing`` as the engine committed it, the way :func:`firing_of` reads it back."""
    context = _with_event(firing.context)
    return firing if context is firing.context else replace(firing, context=context)


def _with_event(context: dict[str, Any]) -> dict[str, Any]:
    """The engine stores the triggering events once (``events``); ``event`` is the first."""
    if "event" not in context:
        events = context.get("events") or []
        context = {**context, "event": events[0] if events else {}}
    return context


def newest(table: Any, limit: int, *order: Any, **equal: object) -> Select[Any]:
    """``table`` rows in ``order``, at most ``limit`` (capped at 1,000), where each given
    (truthy) filter equals its column."""
    stmt = select(table).order_by(*order).limit(min(limit, 1000))
    for column, value in equal.items():
        if value:
            stmt = stmt.where(table.c[column] == value)
    return stmt


def outbox_rows(result: Result[Any]) -> list[OutboxRow]:
    return [OutboxRow.model_validate(dict(r._mapping)) for r in result]


def attempt_rows(result: Result[Any]) -> list[AttemptRow]:
    return [AttemptRow.model_validate(dict(r._mapping)) for r in result]


def add_missing_columns(conn: Connection) -> None:
    """Columns added after a table was first created (no migrations yet): add them.

    ``create_all`` creates missing tables only; an older database gets the
    newer nullable/defaulted columns here, so it keeps working after an upgrade.
    """
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
