"""The event bus seam: one Protocol, an in-process and a Kafka implementation.

Contract (both implementations, pinned by ``tests/events/test_bus_contract.py``):

* ``publish(events)`` returns once every event is accepted by the bus (for Kafka:
  acknowledged by the broker); events are keyed by ``resource.id`` so one
  resource's events keep their order.
* ``subscribe(group, handler)`` registers a consumer group before ``start()``.
  Each group sees every event published after ``start()`` (and, on Kafka, what
  the topic still retains and the group has not committed).
* The handler receives batches. A batch is committed only after the handler
  returns; if it raises, the same events are delivered again (at-least-once).
  Handlers must therefore be idempotent on ``Event.id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from events.model import Event

TOPIC = "runbell.events"

_log = structlog.get_logger(__name__)

BatchHandler = Callable[[list[Event]], Awaitable[None]]


class EventBus(Protocol):
    """Where events travel between ingestion, the store writer and the engine."""

    url: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish a batch; returns once the bus holds all of it."""
        ...

    def subscribe(self, group: str, handler: BatchHandler, *, max_batch: int = 500) -> None:
        """Register ``handler`` for consumer group ``group``; call before ``start()``."""
        ...


def bus_from_url(url: str, *, topic: str = TOPIC, partitions: int = 4) -> EventBus:
    """``memory://`` or ``kafka://host:port[,host:port]`` (a missing topic is created
    with ``partitions`` partitions)."""
    if url.startswith("memory://"):
        from events._memory_bus import MemoryBus

        return MemoryBus(url=url, topic=topic)
    if url.startswith("kafka://"):
        from events._kafka_bus import KafkaBus

        return KafkaBus(url=url, topic=topic, partitions=partitions)
    raise ValueError(f"unknown bus URL {url!r}: use memory:// or kafka://host:port")


async def back_off(
    exc: Exception, *, group: str, topic: str, attempt: int, initial: float, maximum: float
) -> None:
    """Log a failed handler (``bus_handler_failed``) and wait out the capped exponential
    backoff before its batch is delivered again; both buses share this."""
    _log.error("bus_handler_failed", group=group, topic=topic, attempt=attempt, error=repr(exc))
    await asyncio.sleep(min(maximum, initial * 2 ** (attempt - 1)))
