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

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from events.database import SQLITE_BUSY_TIMEOUT_MS

__all__ = ["in_transaction", "on_connection", "retry_busy", "sqlite_time"]

T = TypeVar("T")
BUSY_WAIT_S = SQLITE_BUSY_TIMEOUT_MS / 1000
BUSY_STEP_MIN = 0.0002
BUSY_STEP_MAX = 0.001


async def in_transaction(
    db: AsyncEngine, work: Callable[[sqlite3.Connection], T], *, write: bool = True
) -> T:
    """Run ``work(connection)`` as one transaction on aiosqlite's thread (SQLite only).
    ``write``: it takes the write lock up front (``BEGIN IMMEDIATE``, see ``_begin``)."""
    return await on_connection(db, _transaction, work, write)


async def on_connection(db: AsyncEngine, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(connection, *args)`` on aiosqlite's thread, on the pooled connection
    SQLAlchemy would have used (so it queues behind the others' transactions)."""
    # A bare pool checkout (no SQLAlchemy Connection around it): a third less of the
    # hand-off's cost than connect() + get_raw_connection(), on every engine batch.
    fairy = await db.raw_connection()
    try:
        driver: Any = fairy.driver_connection  # aiosqlite.Connection
        result: T = await driver._execute(work, driver._conn, *args)
        return result
    finally:
        await greenlet_spawn(fairy.close)
        # Let a task the check-in woke take the connection before this one's caller can
        # check it out again (without a turn of the loop a steady writer starved the
        # checkpointer's RESTART: asyncio's queue hands an item to whoever asks first).
        await asyncio.sleep(0)


def retry_busy(
    connection: sqlite3.Connection, attempt: Callable[[], T | None], wait_s: float = BUSY_WAIT_S
) -> T | None:
    """``attempt()`` until it returns something, waiting at most ``BUSY_STEP_MAX``
    between tries (not SQLite's 1-25 ms busy handler, see ``_begin``); None after
    ``wait_s``. ``attempt`` returns None, or raises "database is locked", when
    another process holds the database."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + wait_s
        step = BUSY_STEP_MIN
        while True:
            try:
                done = attempt()
                if done is not None:
                    return done
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                return None
            time.sleep(step)
            step = min(step * 2, BUSY_STEP_MAX)
    finally:
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _transaction(
    connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], write: bool
) -> T:
    if write and not connection.in_transaction:
        _begin(connection)
    try:
        result = work(connection)
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
    return result


def _begin(connection: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process's writer in short steps.

    The service and its delivery worker (automations/service/worker.py) are two
    processes writing one database. SQLite's own busy handler waits 1, 2, 5, 10, 15,
    20, 25, 25... ms between tries: under load a writer slept 25 ms at a time, most of
    the latency p99. Once the write lock is held nothing else in the transaction can
    find the database busy.
    """

    def begin() -> bool:
        connection.execute("BEGIN IMMEDIATE")
        return True

    if retry_busy(connection, begin) is None:
        raise sqlite3.OperationalError("database is locked")


def sqlite_time(text: str) -> datetime:
    """A ``UtcDateTime`` as SQLite stores it (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
