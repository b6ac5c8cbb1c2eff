"""One SQLite transaction per round trip to aiosqlite's worker thread.

Through SQLAlchemy's async adapter every statement, cursor, fetch and commit is
its own hand-off to aiosqlite's thread and back (a queue put, a thread wake-up,
``call_soon_threadsafe``): on a small VM each costs tens of microseconds of
futex and wake-up work, and a delivery pays about a dozen. ``in_transaction``
runs a whole transaction, written as a plain function over the ``sqlite3``
connection, in one hand-off: commit on return, rollback on error, on the
pooled connection SQLAlchemy would have used (so it queues behind the other
transactions exactly as they do).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["in_transaction", "sqlite_time"]

T = TypeVar("T")


async def in_transaction(db: AsyncEngine, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work(connection)`` as one transaction on aiosqlite's thread (SQLite only)."""
    async with db.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # aiosqlite.Connection
        result: T = await driver._execute(_transaction, driver._conn, work)
        return result


def _transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    try:
        result = work(connection)
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
    return result


def sqlite_time(text: str) -> datetime:
    """A ``UtcDateTime`` as SQLite stores it (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
