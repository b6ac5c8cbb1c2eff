"""Errors raised by ``events``.

    EventsError
    ├── BusError          the bus could not publish or consume (Kafka unreachable, ...)
    └── StoreError        the event store could not read or write

Third-party errors are converted at the boundary with ``raise ... from exc``.
"""


class EventsError(Exception):
    """Root of every error raised by the ``events`` package."""


class BusError(EventsError):
    """Publishing to or consuming from the bus failed."""


class StoreError(EventsError):
    """The event store failed to read or write."""
