"""What the service and a delivery worker process tell each other, through the database.

* **Owed rows.** A worker learns that rows are owed now from the database: on
  PostgreSQL, a commit that owes intents (the engine's batch, a replay) runs
  ``NOTIFY runbell_outbox`` in its transaction and the worker listens; on
  SQLite the worker polls :class:`CommitPoll` (``PRAGMA data_version``: has a
  commit happened? only then, is an owed row due?).
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
from typing import Any

from sqlalchemy import BigInteger, Column, Text, delete, select
from sqlalchemy.dialects import sqlite
from sqlmodel import Field, SQLModel

from automations.state.model import OWED, StoreBase
from events.database import driver_time
from events.model import Event

__all__ = ["NOTIFY_OUTBOX", "OUTBOX_CHANNEL", "CommitPoll", "HandoffState", "TrailRow"]

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


_POLL_BUSY_S = 0.05  # a reader waits for a WAL reset this long at most, then tries again
_TRAIL = TrailRow.__table__  # type: ignore[attr-defined]
_TRAIL_SQLITE = "SELECT 1 FROM delivery_trail LIMIT 1"
_DUE_SQLITE = (
    "SELECT 1 FROM action_outbox "  # noqa: S608 (constants only)
    f"WHERE status IN ({', '.join(repr(s) for s in OWED)}) AND next_attempt_at <= ? LIMIT 1"
)


class CommitPoll:
    """SQLite: has a commit put rows where ``query`` finds them? Asked every few ms.

    A read-only connection of its own, used in the caller's thread: ``PRAGMA
    data_version`` is a read of the WAL index (microseconds), so a poll costs no hop
    to aiosqlite's thread and no turn on the caller's pooled connection (with both,
    the delivery worker's poll every 2 ms cost it 7 % of a core at rest). The version
    changes when any other connection commits, the caller's own included; ``query``
    (an indexed ``LIMIT 1``) runs only then, and a WAL reader never waits for a
    writer. :meth:`owed` is the delivery worker's question, :meth:`trail` the
    service's."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(
            path, timeout=_POLL_BUSY_S, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA query_only=ON")

    def owed(self, seen: int | None, now: datetime) -> tuple[int, bool]:
        """(the ``data_version`` read now, whether an outbox row is owed by ``now``)."""
        return self._found(seen, _DUE_SQLITE, (driver_time(now, "sqlite"),))

    def trail(self, seen: int | None) -> tuple[int, bool]:
        """(the ``data_version`` read now, whether the trail inbox holds an event)."""
        return self._found(seen, _TRAIL_SQLITE, ())

    def _found(self, seen: int | None, query: str, params: tuple[Any, ...]) -> tuple[int, bool]:
        """``query`` is read only when the version differs from ``seen`` (or it is None)."""
        version: int = self._connection.execute("PRAGMA data_version").fetchone()[0]
        if version == seen:
            return version, False
        return version, self._connection.execute(query, params).fetchone() is not None

    def close(self) -> None:
        self._connection.close()


class HandoffState(StoreBase):
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
