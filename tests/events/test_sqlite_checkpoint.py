"""WAL checkpoints off the hot path (events/sqlite_checkpoint.py), on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from events.database import create_engine
from events.model import Event
from events.sql_store import SqlEventStore
from events.sqlite_checkpoint import WalCheckpointer
from events.testing import FakeClock


def _events(n: int) -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(id=uuid4(), occurred=now, event="flow-run.Failed", resource={"resource.id": f"r.{i}"})
        for i in range(n)
    ]


async def test_the_service_connections_never_checkpoint_and_a_passive_one_catches_up(
    tmp_path: Path,
) -> None:
    """Commits only append to the WAL; ``checkpoint`` copies all of it into the database
    (the next writer then reuses the WAL from its start), and nothing committed is lost."""
    db = create_engine(f"sqlite:///{tmp_path / 'x.db'}", pool_size=1, max_overflow=0)
    checkpointer = WalCheckpointer(db, FakeClock())
    store = SqlEventStore(db)
    await store.start()
    try:
        async with db.connect() as conn:
            raw = await conn.get_raw_connection()
            cursor = await raw.driver_connection.execute("PRAGMA wal_autocheckpoint")  # type: ignore[union-attr]
            assert (await cursor.fetchone())[0] == 0
        for _ in range(5):
            await store.insert(_events(200))
        busy, frames, copied = await checkpointer.checkpoint()
        assert busy == 0 and frames > 0 and copied == frames
        await store.insert(_events(1))  # restarts the WAL: a few frames, not frames + more
        _, after, _ = await checkpointer.checkpoint()
        assert 0 < after < frames
    finally:
        await checkpointer.stop()
        await db.dispose()
    reopened = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        page = await SqlEventStore(reopened).replay(None, limit=2000)
        assert len(page) == 1001
    finally:
        await reopened.dispose()


async def test_the_wal_restarts_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    """The service's writer never pauses, yet after each checkpoint the next commit
    starts the WAL from the top: a few commits later it holds a few commits' frames,
    not every frame since the start (passive checkpoints alone never caught up, so the
    WAL grew with every commit)."""
    db = create_engine(f"sqlite:///{tmp_path / 'x.db'}", pool_size=1, max_overflow=0)
    checkpointer = WalCheckpointer(db, FakeClock())
    store = SqlEventStore(db)
    await store.start()
    stop = asyncio.Event()
    committed = asyncio.Condition()
    commits = 0

    async def write() -> None:
        nonlocal commits
        while not stop.is_set() and commits < 5_000:  # bounded
            await store.insert(_events(5))
            commits += 1
            async with committed:
                committed.notify_all()

    async def commits_land(n: int) -> None:
        target = commits + n
        async with committed:
            await asyncio.wait_for(committed.wait_for(lambda: commits >= target), 10)

    probe = sqlite3.connect(tmp_path / "x.db")
    writer = asyncio.create_task(write())
    try:
        in_wal: list[int] = []
        for _ in range(20):
            await commits_land(10)
            busy, frames, copied = await checkpointer.checkpoint()
            assert busy == 0 and copied == frames
            await commits_land(3)
            in_wal.append(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        stop.set()
        await writer
        assert commits >= 20 * 13
        # 3 commits of 5 events each: a few dozen frames, every time.
        assert max(in_wal) < 100, in_wal
    finally:
        stop.set()
        await writer
        probe.close()
        await checkpointer.stop()
        await db.dispose()


async def test_stop_waits_for_a_checkpoint_still_running_in_its_thread(tmp_path: Path) -> None:
    """stop() while a checkpoint's worker thread is busy: the close waits for it (closing
    the connection under it crashed the process), and a stopped checkpointer stays shut."""
    db = create_engine(f"sqlite:///{tmp_path / 'x.db'}", pool_size=1, max_overflow=0)
    store = SqlEventStore(db)
    await store.start()
    try:
        for _ in range(20):
            await store.insert(_events(50))
            checkpointer = WalCheckpointer(db, FakeClock())
            running = asyncio.create_task(checkpointer.checkpoint())
            await asyncio.wait({running}, timeout=0)  # let it reach its thread
            running.cancel()
            await checkpointer.stop()
            assert checkpointer._connection is None
            assert checkpointer._passive() == (0, 0, 0)  # no connection reopened
        assert len(await store.replay(None, limit=2000)) == 1000
    finally:
        await db.dispose()
