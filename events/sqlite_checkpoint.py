"""WAL checkpoints off the hot path, for the embedded SQLite database.

With SQLite's automatic checkpoints the commit that finds the WAL past
``wal_autocheckpoint`` pages copies the WAL into the database file and fsyncs
both, on the connection every ingestion, engine and dispatcher transaction
queues behind: at 100 events/s that was a 30-45 ms stall every ~2 s, the whole
of the latency p99 (bench/README.md, "bench: latency"). ``WalCheckpointer``
turns automatic checkpoints off on the service's connections and runs
``PRAGMA wal_checkpoint(PASSIVE)`` from its own connection on a worker thread
four times a second instead: a passive checkpoint never blocks a writer (it
copies what no reader still needs). A ``RESTART`` checkpoint on the service's
own connection then copies the few commits that landed meanwhile, between two
transactions, so the next writer starts the WAL from the beginning again and
the file stays bounded (a passive checkpoint alone never catches up under
steady load).

Durability is unchanged: a commit is durable once it is in the WAL, whoever
checkpoints it later, and SQLite replays the WAL when the database is opened
after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from events.clock import Clock
from events.sqlite import on_connection, retry_busy

__all__ = ["INTERVAL", "WalCheckpointer", "no_autocheckpoint"]

log = structlog.get_logger("runbell.sqlite")

INTERVAL = timedelta(milliseconds=250)
RESTART_WAIT_S = 0.05


class WalCheckpointer:
    """Passive WAL checkpoints every ``interval`` on the clock; see the module docstring."""

    def __init__(self, db: AsyncEngine, clock: Clock, interval: timedelta = INTERVAL) -> None:
        if db.dialect.name != "sqlite" or not db.url.database:
            raise ValueError("WalCheckpointer needs a SQLite database file")
        self._db = db
        self._path = db.url.database
        self._clock = clock
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._connection: sqlite3.Connection | None = None
        # A cancelled checkpoint's thread runs on: closing the connection under it
        # crashed the process (SIGSEGV). The lock makes the close wait for it.
        self._lock = threading.Lock()
        self._closed = False
        no_autocheckpoint(db)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="runbell-wal-checkpoint")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def checkpoint(self) -> tuple[int, int, int]:
        """A passive checkpoint, then the rest on the service's connection:
        (busy, WAL frames, frames checkpointed), as SQLite says of the last one."""
        busy, frames, copied = await asyncio.to_thread(self._passive)
        if frames == 0:
            return busy, frames, copied

        # Under a steady stream of commits a passive checkpoint never copies the last
        # frame before the next commit adds one, so no writer ever restarts the WAL: it
        # grew past 400 MB in a minute of the trigger bench, and every commit slowed
        # down with it. What is left now is a few commits' worth. RESTART copies it on
        # the writers' own connection, between two of their transactions (never starved
        # by them, as another connection's RESTART was), and the next commit starts the
        # WAL from the top again.
        def restart(connection: sqlite3.Connection) -> tuple[int, int, int]:
            def once() -> tuple[int, int, int] | None:
                row = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                return None if row[0] else (0, int(row[1]), int(row[2]))

            # Busy while another process writes or reads (the delivery worker): retried
            # in short steps, for a bounded time; the next round tries again.
            done = retry_busy(connection, once, wait_s=RESTART_WAIT_S)
            return done if done is not None else (1, frames, copied)

        return await on_connection(self._db, restart)

    def _passive(self) -> tuple[int, int, int]:
        with self._lock:
            if self._closed:  # a round cancelled by stop() that started only now
                return 0, 0, 0
            if self._connection is None:
                self._connection = sqlite3.connect(self._path, check_same_thread=False)
            row: Any = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def _run(self) -> None:
        while True:
            await self._clock.sleep_until(self._clock.now() + self._interval)
            try:
                await self.checkpoint()
            except (sqlite3.Error, OSError) as exc:  # the next round retries
                log.error("wal_checkpoint_failed", error=str(exc))


def no_autocheckpoint(db: AsyncEngine) -> None:
    """Every connection ``db`` opens from now on: no automatic checkpoint (another
    connection checkpoints the WAL)."""
    event.listen(db.sync_engine, "connect", _no_autocheckpoint)


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    finally:
        cursor.close()
