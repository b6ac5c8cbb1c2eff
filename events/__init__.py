"""runbell events: the event model, the bus, the store and the clock.

Depends on nothing else of runbell's. See CONTRACTS.md before changing it.

Besides the names below, these modules are public (they load SQLAlchemy, which
``import events`` does not): ``events.database`` (engines, URLs, column types),
``events.sql_store`` (``SqlEventStore``, the :class:`EventStore` on SQL),
``events.sqlite`` (one SQLite transaction per hand-off) and
``events.sqlite_checkpoint`` (WAL checkpoints off the hot path). Modules named
``_x`` are private to this package.
"""

from events.bus import (
    TOPIC,
    BatchHandler,
    EventBus,
    PartitionedBus,
    PartitionHandler,
    PartitionListener,
    bus_from_url,
    partitioned_bus_from_url,
)
from events.clock import Clock, SystemClock
from events.errors import BusError, EventsError, StoreError
from events.model import MAX_DEPTH, MAX_EVENT_BYTES, MAX_LABELS, MAX_RELATED, Event, Origin
from events.store import EventPage, EventQuery, EventStore

__all__ = [
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "MAX_LABELS",
    "MAX_RELATED",
    "TOPIC",
    "BatchHandler",
    "BusError",
    "Clock",
    "Event",
    "EventBus",
    "EventPage",
    "EventQuery",
    "EventStore",
    "EventsError",
    "Origin",
    "PartitionHandler",
    "PartitionListener",
    "PartitionedBus",
    "StoreError",
    "SystemClock",
    "bus_from_url",
    "partitioned_bus_from_url",
]
