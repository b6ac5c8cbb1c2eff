"""What the service and a delivery worker process tell each other, through the database.

* **Owed rows.** A worker learns that rows are owed now from the database: on
  PostgreSQL, a commit that owes intents (the engine's batch, a replay) runs
  ``NOTIFY runbell_outbox`` in its transaction and the worker listens; on
  SQLite the worker polls :meth:`HandoffState.owed_now` (``PRAGMA data_version``:
  has another connection committed? only then, is an owed row due?).
* **The trail inbox** (``delivery_trail``): trail events the service's engine must
  see, written by the worker (embedded bus) and drained by the service into its
  own ingestion, which stamps them ``received`` like any event it accepts (one
  stamper, so the recovery watermark keeps its meaning). Draining inserts into
  the store first and deletes from the inbox after; a crash in between drains the
  rows again, and the store ignores ids it holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Column, Text, delete, select
from sqlalchemy.dialects import sqlite
from sqlmodel import Field, SQLModel

from automations.state.model import OWED, StoreBase
from events.database import driver_time
from events.model import Event
from events.sqlite import on_connection

__all__ = ["NOTIFY_OUTBOX", "OUTBOX_CHANNEL", "HandoffState", "TrailRow"]

OUTBOX_CHANNEL = "runbell_outbox"
"""PostgreSQL: the channel a commit owing outbox rows notifies (``NOTIFY``)."""
NOTIFY_OUTBOX = f"NOTIFY {OUTBOX_CHANNEL}"


class TrailRow(SQLModel, table=True):
    """A trail event the worker hands the service (the inbox)."""

    __tablename__ = "delivery_trail"

    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(sqlite.INTEGER(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    event: str = Field(sa_column=Column(Text, nullable=False))  # the event's JSON


_TRAIL = TrailRow.__table__  # type: ignore[attr-defined]
_DUE_SQLITE = (
    "SELECT 1 FROM action_outbox "  # noqa: S608 (constants only)
    f"WHERE status IN ({', '.join(repr(s) for s in OWED)}) AND next_attempt_at <= ? LIMIT 1"
)


class HandoffState(StoreBase):
    async def owed_now(self, seen: int | None, now: datetime) -> tuple[int, bool]:
        """SQLite: (this connection's ``data_version``, whether a row is owed by ``now``).

        The version changes when another connection commits (never for this
        connection's own writes, so the poller's own claims do not wake it); the
        outbox is read only then, and when ``seen`` is None. One hop to aiosqlite's
        thread, no write lock."""
        at = driver_time(now, "sqlite")

        def poll(connection: sqlite3.Connection) -> tuple[int, bool]:
            version: int = connection.execute("PRAGMA data_version").fetchone()[0]
            if version == seen:
                return version, False
            return version, connection.execute(_DUE_SQLITE, (at,)).fetchone() is not None

        return await on_connection(self.engine, poll)

    async def hand_trail(self, events: Sequence[Event]) -> None:
        """Put trail events in the inbox for the service (durable on return)."""
        if not events:
            return
        async with self.engine.begin() as conn:
            await conn.execute(_TRAIL.insert(), [{"event": e.to_json().decode()} for e in events])

    async def handed_trail(self, limit: int = 1000) -> list[tuple[int, Event]]:
        """The oldest trail events in the inbox, with their sequence numbers."""
        stmt = select(_TRAIL.c.seq, _TRAIL.c.event).order_by(_TRAIL.c.seq).limit(limit)
        async with self.engine.connect() as conn:
            return [(seq, Event.from_json(text)) for seq, text in await conn.execute(stmt)]

    async def drop_trail(self, seqs: Sequence[int]) -> None:
        """Delete these inbox rows (ingested)."""
        if seqs:
            async with self.engine.begin() as conn:
                await conn.execute(delete(_TRAIL).where(_TRAIL.c.seq.in_(list(seqs))))
