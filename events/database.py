"""One async SQLAlchemy engine per database, shared by every package's tables.

Tables are declared on one shared metadata, :data:`metadata` (SQLModel's), so the
event store and the automations state store live side by side on the same
engine and :func:`create_all` creates all of them. A table exists in the metadata
once the module that declares it is imported: the composition root imports the
stores it wires before it calls :func:`create_all`. Core ``Table`` objects and
``SQLModel`` classes with ``table=True`` may be mixed.

URLs accepted (normalised to the async drivers):

* ``sqlite:///./runbell.db`` and ``sqlite+aiosqlite:///...`` → aiosqlite
* ``postgresql://...``, ``postgres://...`` and ``postgresql+asyncpg://...`` → asyncpg

Credentials never reach a log or an error message: print :func:`redact_url`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Dialect, MetaData, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from events.model import json_bytes, json_loads

metadata: MetaData = SQLModel.metadata
"""Every runbell table, whichever package declares it."""

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_WAL_CHECKPOINT_PAGES = 10_000

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def normalise_url(url: str) -> URL:
    """Parse ``url`` and point it at the async driver; :class:`ValueError` if unsupported."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(
            f"cannot parse database URL {redact_url(url)!r}: "
            "use sqlite:///path.db or postgresql://user@host/db"
        ) from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite:///path.db or postgresql://user@host/db"
        )
    return parsed.set(drivername=driver)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` (see the module docstring for accepted URLs).

    Extra keyword arguments go to :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    target = normalise_url(url)
    if target.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    # JSON columns sit on the engine's hot path: orjson is several times faster.
    kwargs.setdefault("json_serializer", _json_dumps)
    kwargs.setdefault("json_deserializer", json_loads)  # exact past 64 bits
    if target.get_backend_name() == "sqlite":
        # Each statement already commits or rolls back; a reset on every return
        # to the pool is one more thread round trip per transaction.
        kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(target, **kwargs)
    if target.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def _json_dumps(value: Any) -> str:
    return driver_json(value)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Pragmas are per connection, so they are set on every new one.
    # WAL + synchronous=NORMAL: a commit is in the WAL file (the OS page cache)
    # when it returns, which survives a `kill -9` of the process at any instant —
    # runbell's durability invariant. Only a power loss / OS crash may drop the
    # last commits; use synchronous=FULL or PostgreSQL if that matters.
    # busy_timeout: writers from other connections wait instead of failing at once.
    # wal_autocheckpoint: the commit that finds the WAL past this many pages copies it
    # into the database and fsyncs both files. SQLite's 1,000 pages (4 MB) is every few
    # engine batches (each event inserts into ~4 random-keyed indexes, a page each);
    # 10,000 (40 MB) checkpoints a tenth as often, and a page rewritten by several
    # batches is copied once. Durability is unchanged: a commit is in the WAL either way.
    # temp_store=MEMORY: the statement journals and sort b-trees of multi-row writes were
    # files in /var/tmp, created and unlinked about 13 times a second at 100 events/s.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")
    finally:
        cursor.close()


async def create_all(engine: AsyncEngine) -> None:
    """Create every table registered in :data:`metadata` that does not exist yet."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def redact_url(url: str | URL) -> str:
    """``url`` with its password masked as ``***``; safe to log."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a URL SQLAlchemy understands: mask anything that looks like user:pass@.
        return _USERINFO.sub(r"\g<scheme>\g<user>:***@", url)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both dialects.

    SQLite has no time zone type: SQLAlchemy stores a fixed-width text
    (``YYYY-MM-DD HH:MM:SS.ffffff``) and drops the offset, so values are
    converted to UTC first; fixed width keeps text order equal to time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# -- values for statements sent to the driver as they are ----------------------------------
# The engine's hot inserts skip SQLAlchemy's per-row bind processing: their values are
# encoded here exactly as the column types above would bind them.


def driver_time(value: datetime, dialect: str) -> datetime | str:
    """``value`` as :class:`UtcDateTime` binds it: aware UTC (PostgreSQL) or SQLite's text."""
    last = _LAST_TIME.get(dialect)
    if last is not None and last[0] == value:  # a batch's firings often share a moment
        return last[1]  # (a naive value never equals the aware one kept here)
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware one")
    bound: datetime | str
    if dialect == "sqlite":
        utc = value.astimezone(UTC) if offset else value
        # SQLAlchemy's SQLite DATETIME storage format: "YYYY-MM-DD HH:MM:SS.ffffff"
        # (spelled out: a third of astimezone + replace + isoformat, once per firing).
        bound = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
            utc.year,
            utc.month,
            utc.day,
            utc.hour,
            utc.minute,
            utc.second,
            utc.microsecond,
        )
    else:
        bound = value.astimezone(UTC)
    _LAST_TIME[dialect] = (value, bound)
    return bound


_LAST_TIME: dict[str, tuple[datetime, datetime | str]] = {}  # dialect → (value, bound)


def driver_json(value: Any) -> str:
    """A JSON column's value as the engine's serializer writes it."""
    return json_bytes(value).decode()


def driver_bool(value: bool, dialect: str) -> bool | int:
    return int(value) if dialect == "sqlite" else value


@lru_cache(maxsize=256)
def driver_insert(
    dialect: str, table: str, columns: tuple[str, ...], rows: int = 1, tail: str = ""
) -> str:
    """``INSERT INTO table (columns) VALUES (...) [x rows] tail`` in the driver's paramstyle."""
    width = len(columns)
    if dialect == "sqlite":
        one = "(" + ", ".join("?" * width) + ")"
        values = ", ".join([one] * rows)
    else:  # asyncpg: $1, $2, ... numbered across the rows
        values = ", ".join(
            "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
            for r in range(rows)
        )
    # table, columns and tail are the callers' constants, never user input
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} {tail}".rstrip()  # noqa: S608
