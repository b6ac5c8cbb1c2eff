"""The event store seam: durable, queryable, idempotent on ``Event.id``.

Contract (pinned by ``tests/events/test_store_contract.py``, run on SQLite and
PostgreSQL):

* ``insert`` stores new events and silently ignores ids it already holds; it
  returns the ids that were new, in input order. When it returns, the events
  are durable (committed).
* ``query`` filters by event-name glob (``*`` matches any run of characters,
  including none), exact resource id, ``since``/``until`` on ``occurred``
  (inclusive/exclusive), newest first, and pages with an opaque cursor. A
  cursor it did not issue, or a ``since``/``until`` without a timezone or out
  of range in UTC, raises :class:`ValueError` naming the argument.
* ``replay`` yields events in arrival order (``received``, then insertion)
  strictly after a ``received`` watermark: the embedded default uses it to
  hand the engine what it had not processed before a crash.
* ``prune`` deletes events whose ``occurred`` is older than a cutoff (retention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from events.model import Event


@dataclass(frozen=True, slots=True)
class EventQuery:
    name: str | None = None  # glob on the event name
    resource_id: str | None = None
    since: datetime | None = None  # occurred >= since
    until: datetime | None = None  # occurred < until
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    next_cursor: str | None


class EventStore(Protocol):
    async def start(self) -> None:
        """Connect and create tables if needed."""
        ...

    async def stop(self) -> None: ...

    async def insert(self, events: Sequence[Event]) -> list[UUID]: ...

    async def get(self, event_id: UUID) -> Event | None: ...

    async def query(self, query: EventQuery) -> EventPage: ...

    async def replay(self, after_received: datetime | None, limit: int = 1000) -> list[Event]: ...

    async def prune(self, older_than: datetime) -> int: ...
