"""Engine replicas on Kafka: a router keyed like the bus, shards keyed by automation.

The bus is keyed by resource id, but a bucket is not: ``for_each: [deployment]``
gathers many flow runs, and an automation without ``for_each`` has one bucket for
everything. So the engine is split in two consumer groups, each holding state for
exactly the partitions it was assigned:

* **router** (group ``runbell-router`` on the events topic, state per events
  partition = per bus key): puts each resource's events in ``follows`` order
  (holding a follower until its leader has been routed, as the engine does) and
  forwards every event to the engine-topic partitions of the automations that may
  care about it (:class:`automations.engine.CandidateIndex`), then a watermark.
* **shards** (group ``runbell-engine-shards`` on the engine topic): partition
  ``p`` owns every automation with ``shard_of(name) == p``, so all of an
  automation's buckets, composites and deadlines live in one place, and two
  replicas never share a bucket.

Each assigned partition gets its own :class:`~automations.engine.Engine` over a
scoped :class:`~automations.state.StateStore` (``route/<p>`` or ``shard/<p>``):
its processed ids, held events and event clock are its own, and it *claims* the
scope on assignment, bumping an epoch in ``engine_scopes``. Every batch commit
re-checks that epoch inside its transaction (a row lock on PostgreSQL), so a
replica that lost the partition — however late its last batch lands — is fenced
and cannot double-fire; the new owner loads the state the old one committed. The
forwarding is at-least-once (a router batch is forwarded before it commits) and
the shards' scoped processed ids make a second copy a no-op.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

import structlog

from automations.engine import CandidateIndex, Engine
from automations.spec import Config
from automations.state.engine import Fenced
from events.clock import Clock
from events.model import Event

log = structlog.get_logger("runbell.partitioning")

ROUTER_GROUP = "runbell-router"
SHARD_GROUP = "runbell-engine-shards"
WATERMARK_EVERY = timedelta(milliseconds=500)

Publish = Callable[[Mapping[int, Sequence[Event]]], Awaitable[None]]
PublishWatermark = Callable[[Sequence[int], datetime], Awaitable[None]]


def shard_of(automation: str, partitions: int) -> int:
    """The engine-topic partition that owns ``automation`` (stable across processes)."""
    return zlib.crc32(automation.encode()) % partitions


def shard_config(config: Config, partition: int, partitions: int) -> Config:
    """``config`` with only the automations partition ``partition`` owns."""
    mine = [a for a in config.automations if shard_of(a.name, partitions) == partition]
    return config.model_copy(update={"automations": mine})


class Partitioned:
    """One consumer group's engines: one per assigned partition, fenced by epoch."""

    def __init__(self, name: str, make: Callable[[int], Engine]) -> None:
        self.name = name
        self._make = make
        self.engines: dict[int, Engine] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._progress = asyncio.Event()
        self._rebalanced = asyncio.Event()

    def _lock(self, partition: int) -> asyncio.Lock:
        return self._locks.setdefault(partition, asyncio.Lock())

    async def assigned(self, partitions: set[int]) -> None:
        for partition in sorted(partitions):
            async with self._lock(partition):
                if partition not in self.engines:
                    await self._adopt(partition)
        self._rebalanced.set()

    async def revoked(self, partitions: set[int]) -> None:
        for partition in sorted(partitions):
            async with self._lock(partition):  # the last batch has finished
                if self.engines.pop(partition, None) is not None:
                    log.info("partition_released", group=self.name, partition=partition)
        self._rebalanced.set()

    async def _adopt(self, partition: int) -> Engine:
        engine = self._make(partition)
        epoch = await engine.state.claim()
        await engine.load()
        self.engines[partition] = engine
        log.info("partition_claimed", group=self.name, partition=partition, epoch=epoch)
        return engine

    async def handle(self, partition: int, events: list[Event], watermark: datetime | None) -> None:
        async with self._lock(partition):
            engine = self.engines.get(partition) or await self._adopt(partition)
            try:
                if watermark is not None:
                    engine.advance_clock(watermark)
                if events:
                    await engine.handle(events)
                self._progress.set()
            except Fenced:
                self._fenced(partition)
                raise

    async def progressed(self, timeout: float) -> None:
        """Wait (bounded: TimeoutError) until some partition handles another batch."""
        self._progress.clear()
        await asyncio.wait_for(self._progress.wait(), timeout)

    async def rebalanced(self, timeout: float) -> None:
        """Wait (bounded: TimeoutError) until partitions are assigned or revoked again."""
        self._rebalanced.clear()
        await asyncio.wait_for(self._rebalanced.wait(), timeout)

    def next_wakeup(self) -> datetime | None:
        moments = [m for e in self.engines.values() if (m := e.next_wakeup()) is not None]
        return min(moments, default=None)

    async def tick(self) -> int:
        fired = 0
        for partition in list(self.engines):
            async with self._lock(partition):
                engine = self.engines.get(partition)
                if engine is None:
                    continue
                try:
                    fired += await engine.tick()
                except Fenced:
                    self._fenced(partition)
        return fired

    def _fenced(self, partition: int) -> None:
        """Another replica owns it now; if it comes back here, it is read afresh."""
        self.engines.pop(partition, None)
        log.warning("partition_fenced", group=self.name, partition=partition)


class Router:
    """Forwards admitted events to the shards of the automations that may want them."""

    def __init__(
        self,
        config: Config,
        partitions: int,
        publish: Publish,
        publish_watermark: PublishWatermark,
        clock: Clock,
    ) -> None:
        enabled = [a for a in config.automations if a.enabled]
        self.partitions = partitions
        self.index = CandidateIndex(enabled)
        self._shard = {a.name: shard_of(a.name, partitions) for a in enabled}
        self._publish = publish
        self._publish_watermark = publish_watermark
        self.clock = clock
        self._watermark: datetime | None = None
        self._watermark_sent_at: datetime | None = None

    def targets(self, event: Event) -> set[int]:
        return {self._shard[name] for name in self.index.candidates(event)}

    async def forward(self, events: list[Event]) -> None:
        by_partition: dict[int, list[Event]] = {}
        for event in events:
            for partition in self.targets(event):
                by_partition.setdefault(partition, []).append(event)
        if by_partition:
            await self._publish(by_partition)
        now = self.clock.now()
        newest = max(min(e.occurred, now) for e in events)
        if self._watermark is None or newest > self._watermark:
            self._watermark = newest
        await self.send_watermark(now)

    async def send_watermark(self, now: datetime) -> None:
        """At most every WATERMARK_EVERY: every shard learns how far event time got."""
        if self._watermark is None:
            return
        if self._watermark_sent_at is not None and now - self._watermark_sent_at < WATERMARK_EVERY:
            return
        self._watermark_sent_at = now
        await self._publish_watermark(range(self.partitions), self._watermark)


def router_config(config: Config) -> Config:
    """The routers evaluate nothing themselves: they order and forward."""
    return config.model_copy(update={"automations": []})


__all__ = [
    "ROUTER_GROUP",
    "SHARD_GROUP",
    "Partitioned",
    "Router",
    "router_config",
    "shard_config",
    "shard_of",
]
