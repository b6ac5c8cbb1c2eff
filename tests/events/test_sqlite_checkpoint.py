"""WAL checkpoints off the hot path (events/_sqlite_checkpoint.py), on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from events._sql_store import SqlEventStore
from events._sqlite_checkpoint import WalCheckpointer
from events.database import create_engine
from events.model import Event
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
