"""runbell events: the event model, the bus, the store and the clock.

Depends on nothing else of runbell's. See CONTRACTS.md before changing it.
"""

from events.bus import TOPIC, BatchHandler, EventBus, bus_from_url
from events.clock import Clock, SystemClock
from events.errors import BusError, EventsError, StoreError
from events.model import MAX_EVENT_BYTES, MAX_LABELS, MAX_RELATED, Event, Origin
from events.store import EventPage, EventQuery, EventStore

__all__ = [
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
    "StoreError",
    "SystemClock",
    "bus_from_url",
]
