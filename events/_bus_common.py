"""What the bus Protocols and both implementations share: the handler types, the
default topic and the redelivery back-off. Below ``events.bus`` and the buses, so
neither imports the other to get them (``events.bus`` re-exports the public names).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from events.model import Event

__all__ = ["TOPIC", "BatchHandler", "PartitionHandler", "PartitionListener", "back_off"]

TOPIC = "runbell.events"

BatchHandler = Callable[[list[Event]], Awaitable[None]]
"""A consumer group's handler: one batch of events; it returning commits the batch."""

PartitionHandler = Callable[[int, list[Event], datetime | None], Awaitable[None]]
"""``(partition, events in partition order, newest watermark in the batch or None)``."""

PartitionListener = Callable[[set[int]], Awaitable[None]]
"""Called with the partition numbers a rebalance assigned or revoked."""

_log = structlog.get_logger("events.bus")


async def back_off(
    exc: Exception, *, group: str, topic: str, attempt: int, initial: float, maximum: float
) -> None:
    """Log a failed handler (``bus_handler_failed``) and wait out the capped exponential
    backoff before its batch is delivered again; both buses share this."""
    _log.error("bus_handler_failed", group=group, topic=topic, attempt=attempt, error=repr(exc))
    await asyncio.sleep(min(maximum, initial * 2 ** (attempt - 1)))
