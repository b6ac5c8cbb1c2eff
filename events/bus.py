"""The event bus seam: two Protocols, an in-process and a Kafka implementation.

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

:class:`PartitionedBus` adds what the engine's router and shards use on Kafka:
partitions chosen by the publisher (``publish_to``), event-time watermarks, and
consumers told which partitions they own. Only ``kafka://`` has partitions: the
in-process bus is one log, and the embedded service runs one engine on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from events._bus_common import TOPIC, BatchHandler, PartitionHandler, PartitionListener
from events.model import Event

__all__ = [
    "TOPIC",
    "BatchHandler",
    "EventBus",
    "PartitionHandler",
    "PartitionListener",
    "PartitionedBus",
    "bus_from_url",
    "partitioned_bus_from_url",
]


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


class PartitionedBus(EventBus, Protocol):
    """An :class:`EventBus` whose publishers and consumers may go by partition."""

    def subscribe_partitions(
        self,
        group: str,
        handler: PartitionHandler,
        *,
        assigned: PartitionListener,
        revoked: PartitionListener,
        max_batch: int = 500,
    ) -> None:
        """Like ``subscribe``, for a handler that keeps state per partition.

        ``assigned``/``revoked`` run inside the group's rebalance, before records of
        a newly assigned partition are handed out and after the last batch of a
        revoked one returned; ``handler`` gets each partition's share of a batch,
        and the batch commits once every share returned.
        """
        ...

    async def publish_to(self, batches: Mapping[int, Sequence[Event]]) -> None:
        """Publish each batch to its partition (not by key); returns once all are held."""
        ...

    async def publish_watermark(self, partitions: Sequence[int], occurred: datetime) -> None:
        """Tell each partition's consumers that event time has reached ``occurred``:
        their handler gets it as its ``watermark`` argument, with no event."""
        ...


def bus_from_url(url: str, *, topic: str = TOPIC, partitions: int = 4) -> EventBus:
    """``memory://`` or ``kafka://host:port[,host:port]`` (a missing topic is created
    with ``partitions`` partitions)."""
    if url.startswith("memory://"):
        from events._memory_bus import MemoryBus

        return MemoryBus(url=url, topic=topic)
    if url.startswith("kafka://"):
        return partitioned_bus_from_url(url, topic=topic, partitions=partitions)
    raise ValueError(f"unknown bus URL {url!r}: use memory:// or kafka://host:port")


def partitioned_bus_from_url(
    url: str, *, topic: str = TOPIC, partitions: int = 4
) -> PartitionedBus:
    """``kafka://host:port[,host:port]`` (a missing topic is created with ``partitions``
    partitions); ``ValueError`` for any other URL, ``memory://`` included."""
    if url.startswith("kafka://"):
        # Imported here: aiokafka and FastStream load only for a Kafka bus.
        from events._kafka_bus import KafkaBus

        return KafkaBus(url=url, topic=topic, partitions=partitions)
    raise ValueError(
        f"{url!r} has no partitions: engine replicas (router and shards) need "
        "kafka://host:port; the in-process memory:// bus runs one engine"
    )
