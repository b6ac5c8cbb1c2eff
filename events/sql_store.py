"""The SQL event store: one ``events`` table on SQLite (embedded) or PostgreSQL.

The row keeps the whole event as the JSON :meth:`Event.to_json` produced, plus
the columns that queries filter and sort on. ``seq`` is the insertion order: it
breaks ties between equal timestamps, so ordering and cursors are total.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Index,
    Integer,
    Select,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    select,
    tuple_,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from events.database import UtcDateTime, driver_insert, driver_time, metadata
from events.errors import StoreError
from events.model import Event
from events.sqlite import in_transaction
from events.store import EventPage, EventQuery

__all__ = ["MAX_QUERY_LIMIT", "SqlEventStore", "events_table"]

MAX_QUERY_LIMIT = 1000
_INSERT_PAGE = 500  # rows per INSERT statement: well under both drivers' bind-parameter limits
_COLUMNS = ("id", "occurred", "received", "event", "resource_id", "data")


events_table = Table(
    "events",
    metadata,
    # BIGINT on PostgreSQL; SQLite only auto-increments an "INTEGER PRIMARY KEY".
    Column(
        "seq",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("id", Uuid, nullable=False, unique=True),
    Column("occurred", UtcDateTime, nullable=False),
    Column("received", UtcDateTime, nullable=True),
    Column("event", String(1024), nullable=False, index=True),
    Column("resource_id", Text, nullable=False, index=True),
    # Text, not JSONB: JSONB rejects "\u0000" in strings, which events may carry,
    # and reading text back lets Event.model_validate_json take its fast path.
    Column("data", Text, nullable=False),
    Index("ix_events_occurred_seq", "occurred", "seq"),
    Index("ix_events_received_seq", "received", "seq"),
    # AUTOINCREMENT: seq is never reused after prune, so it stays insertion order.
    sqlite_autoincrement=True,
)


class SqlEventStore:
    """:class:`events.store.EventStore` on an async SQLAlchemy engine (SQLite or PostgreSQL).

    The engine belongs to the caller (it may carry other packages' tables);
    :meth:`stop` does not dispose of it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self._dialect!r}: use SQLite or PostgreSQL")

    async def start(self) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.run_sync(events_table.create, checkfirst=True)
        except (SQLAlchemyError, OSError) as exc:
            raise self._error("creating the events table", exc) from exc

    async def stop(self) -> None:
        return None

    async def insert(self, events: Sequence[Event]) -> list[UUID]:
        """Store new events, ignore known ids; the new ids in input order, committed on return.

        The hot path of ingestion: one multi-row ``INSERT ... ON CONFLICT DO NOTHING
        RETURNING id`` per page, sent to the driver with the values encoded as the
        column types bind them (``_driver_row``), not through SQLAlchemy's per-row
        bind processing; on SQLite each page is one hop to aiosqlite's thread.
        """
        unique: dict[UUID, Event] = {}
        for item in events:
            unique.setdefault(item.id, item)  # a batch may repeat an id: the first one wins
        if not unique:
            return []
        dialect = self._dialect
        rows = [_driver_row(item, dialect) for item in unique.values()]
        pages = [rows[start : start + _INSERT_PAGE] for start in range(0, len(rows), _INSERT_PAGE)]
        stored: set[UUID] = set()
        try:
            # One transaction: either the whole batch is durable or none of it.
            if dialect == "sqlite":  # in one round trip to aiosqlite's thread

                def insert_all(connection: sqlite3.Connection) -> list[str]:
                    return [
                        row[0]
                        for page in pages
                        for row in connection.execute(
                            _insert_sql(dialect, len(page)), [v for r in page for v in r]
                        ).fetchall()
                    ]

                found = await in_transaction(self._engine, insert_all)
                stored.update(UUID(hex=value) for value in found)
            else:
                async with self._engine.begin() as conn:
                    for page in pages:
                        sql = _insert_sql(dialect, len(page))
                        params = tuple(value for row in page for value in row)
                        result = await conn.exec_driver_sql(sql, params)
                        stored.update(UUID(str(row[0])) for row in result)
        except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
            raise self._error(f"inserting {len(rows)} events", exc) from exc
        return [event_id for event_id in unique if event_id in stored]

    async def get(self, event_id: UUID) -> Event | None:
        stmt = select(events_table.c.data).where(events_table.c.id == event_id)
        rows = await self._fetch(stmt, f"reading event {event_id}")
        return Event.model_validate_json(rows[0][0]) if rows else None

    async def query(self, query: EventQuery) -> EventPage:
        """Events matching ``query``, newest first (``occurred``, then ``seq``, descending)."""
        if query.limit < 1:
            raise ValueError(f"limit must be at least 1, got {query.limit}")
        limit = min(query.limit, MAX_QUERY_LIMIT)
        t = events_table.c
        stmt = select(t.data, t.occurred, t.seq)
        if query.name is not None:
            stmt = stmt.where(self._name_matches(query.name))
        if query.resource_id is not None:
            stmt = stmt.where(t.resource_id == query.resource_id)
        if query.since is not None:
            stmt = stmt.where(t.occurred >= _utc(query.since, "since"))
        if query.until is not None:
            stmt = stmt.where(t.occurred < _utc(query.until, "until"))
        if query.cursor is not None:
            occurred, seq = decode_cursor(query.cursor)
            after = tuple_(
                bindparam("cursor_occurred", occurred, type_=UtcDateTime),
                bindparam("cursor_seq", seq, type_=BigInteger),
            )
            stmt = stmt.where(tuple_(t.occurred, t.seq) < after)
        stmt = stmt.order_by(t.occurred.desc(), t.seq.desc()).limit(limit + 1)
        rows = await self._fetch(stmt, "querying events")
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(last[1], last[2])
        return EventPage(
            events=[Event.model_validate_json(row[0]) for row in page],
            next_cursor=next_cursor,
        )

    async def replay(self, after_received: datetime | None, limit: int = 1000) -> list[Event]:
        """Events received strictly after ``after_received`` (all when ``None``), arrival order.

        Events stored without ``received`` come only with a full replay, first.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        t = events_table.c
        stmt = select(t.data)
        if after_received is not None:
            stmt = stmt.where(t.received > after_received)
        stmt = stmt.order_by(t.received.asc().nulls_first(), t.seq.asc()).limit(limit)
        rows = await self._fetch(stmt, "replaying events")
        return [Event.model_validate_json(row[0]) for row in rows]

    async def prune(self, older_than: datetime) -> int:
        """Delete events that occurred before ``older_than``; how many were deleted."""
        stmt = delete(events_table).where(events_table.c.occurred < older_than)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(stmt)
        except (SQLAlchemyError, OSError) as exc:
            raise self._error("pruning events", exc) from exc
        return int(result.rowcount)

    # -- internals -----------------------------------------------------------
    def _name_matches(self, pattern: str) -> ColumnElement[bool]:
        column = events_table.c.event
        if "*" not in pattern and "?" not in pattern:
            return column == pattern
        if self._dialect == "sqlite":
            # SQLite's LIKE ignores ASCII case; GLOB is case-sensitive and still uses
            # the index for a literal prefix. PRAGMA case_sensitive_like would flip
            # LIKE for every user of the connection and is deprecated upstream.
            return column.op("GLOB")(glob_to_sqlite_glob(pattern))
        return column.like(glob_to_like(pattern), escape="\\")

    async def _fetch(self, stmt: Select[Any], action: str) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                result = await conn.execute(stmt)
                return list(result.all())
        except (SQLAlchemyError, OSError) as exc:
            raise self._error(action, exc) from exc

    def _error(self, action: str, exc: BaseException) -> StoreError:
        # SQLAlchemy's own message carries the SQL and parameters (event data);
        # the driver's message is enough. Never let the password through.
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        password = self._engine.url.password
        if password:
            detail = detail.replace(str(password), "***")
        return StoreError(
            f"event store ({self._dialect}) failed {action}: {type(cause).__name__}: {detail}"
        )


def _driver_row(item: Event, dialect: str) -> tuple[Any, ...]:
    """``item``'s columns as the column types bind them (``Uuid``: 32 hex digits on SQLite)."""
    received = item.received
    return (
        item.id.hex if dialect == "sqlite" else item.id,
        driver_time(item.occurred, dialect),
        None if received is None else driver_time(received, dialect),
        item.event,
        item.resource_id,
        item.to_json().decode(),
    )


def _insert_sql(dialect: str, rows: int) -> str:
    return driver_insert(
        dialect, "events", _COLUMNS, rows, "ON CONFLICT (id) DO NOTHING RETURNING id"
    )


def glob_to_like(pattern: str) -> str:
    """``*``/``?`` glob → LIKE pattern with ``\\`` as the escape character."""
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def glob_to_sqlite_glob(pattern: str) -> str:
    """``*``/``?`` glob → SQLite GLOB, where ``[`` would open a character class."""
    return pattern.replace("[", "[[]")


_MAX_SEQ = 2**63 - 1  # BIGINT: a larger one cannot even be compared


def _utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC; :class:`ValueError` naming ``name`` if it has no timezone or
    lies outside the years 1-9999 once in UTC (``0001-01-01T00:00+05:00``)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} {moment.isoformat()} has no timezone: add Z or +HH:MM")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{name} {moment.isoformat()} is out of range in UTC") from exc


def encode_cursor(occurred: datetime, seq: int) -> str:
    raw = f"{occurred.astimezone(UTC).isoformat()}|{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Inverse of :func:`encode_cursor`; :class:`ValueError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, seq_text = raw.split("|")
        occurred = _utc(datetime.fromisoformat(moment), "cursor")
        seq = int(seq_text)
        if not 0 <= seq <= _MAX_SEQ:
            raise ValueError("not a cursor this store issued")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(
            f"malformed cursor {cursor[:64]!r}: pass back the next_cursor of a previous page"
        ) from exc
    return occurred, seq
