"""The composition root: wires store, bus, engine, dispatcher and notifiers.

Two shapes, one code path:

* **embedded** (``memory://`` bus, SQLite by default): ingestion writes events
  to the store *before* answering, then hands them to the in-process bus; the
  store is the durable log. On start the engine is handed every stored event
  that arrived after its last durable checkpoint, so a ``kill -9`` at any
  instant loses nothing, and processed ids plus deterministic firing ids make
  the overlap harmless.
* **kafka**: ingestion answers once the broker has acknowledged the events; a
  ``runbell-store`` consumer group writes them to the store, the
  ``runbell-router`` group orders them per resource and forwards them to the
  engine topic, partitioned by automation, where the ``runbell-engine-shards``
  group evaluates them (see :mod:`automations.engine.partitioning`): any number of
  replicas share the work and never share a bucket. Offsets are committed after
  the handlers' writes are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog

from automations.delivery.actions import RunController
from automations.delivery.channels import close_all
from automations.delivery.dispatcher import Dispatcher
from automations.engine import CHECKPOINT, Engine
from automations.engine.partitioning import (
    ROUTER_GROUP,
    SHARD_GROUP,
    Partitioned,
    Router,
    router_config,
    shard_config,
)
from automations.service.settings import Settings
from automations.service.wiring import build_dispatcher
from automations.service.worker import DeliveryWorker
from automations.spec import Config
from automations.state import PROCESSED_RETENTION, StateStore
from automations.state.handoff import CommitPoll
from events.bus import (
    EventBus,
    PartitionedBus,
    PartitionHandler,
    bus_from_url,
    partitioned_bus_from_url,
)
from events.clock import Clock, Stamps, SystemClock
from events.database import create_engine, normalise_url, redact_url
from events.model import Event
from events.sql_store import SqlEventStore
from events.sqlite_checkpoint import WalCheckpointer
from events.store import EventStore
from notifiers import Notifier

log = structlog.get_logger("runbell.service")

ENGINE_GROUP = "runbell-engine"
STORE_GROUP = "runbell-store"
_REPLAY_PAGE = 1000
_TRAIL_PAGE = 1000
TRAIL_POLL_S = 0.05  # how often the embedded service reads the delivery worker's inbox


class Service:
    def __init__(
        self,
        settings: Settings,
        config: Config,
        *,
        clock: Clock | None = None,
        notifiers: Mapping[str, Notifier] | None = None,
        controllers: Mapping[str, RunController] | None = None,
        delivery_argv: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.clock = clock or SystemClock()
        # SQLite admits one writer at a time: with several pooled connections the
        # writers (ingestion, engine, dispatcher) collide and SQLite's busy handler
        # sleeps 1, 2, 5, 10... ms. One connection serialises them in-process, without
        # a sleep, on one aiosqlite thread (bench/README.md, "bench: latency").
        single = normalise_url(settings.database_url).get_backend_name() == "sqlite"
        self.db = create_engine(
            settings.database_url, **({"pool_size": 1, "max_overflow": 0} if single else {})
        )
        # ... and its WAL is checkpointed off that connection (events/sqlite_checkpoint.py).
        self._checkpointer = (
            WalCheckpointer(self.db, self.clock) if single and self.db.url.database else None
        )
        self.store: EventStore = SqlEventStore(self.db)
        self.state = StateStore(self.db)
        self.bus: EventBus  # set below: the in-process bus, or the Kafka events bus
        # Kafka only: the events bus again, as the partitioned bus the routers read,
        # and the engine-shard bus.
        self._events_bus: PartitionedBus | None = None
        self.shard_bus: PartitionedBus | None = None
        self.dispatcher, self.channels, self.controllers = build_dispatcher(
            settings,
            config,
            self.state,
            self.clock,
            self.ingest_trail,
            notifiers=notifiers,
            controllers=controllers,
        )
        # ``delivery_argv``: deliveries run in a worker process started with it
        # (automations/service/worker.py); the dispatcher here is then never started.
        # ``RUNBELL_DELIVERY=external``: workers started on their own (`runbell deliver`)
        # deliver, and this service starts neither.
        self.delivery = DeliveryWorker(delivery_argv) if delivery_argv else None
        # Whichever delivers: all claim on committed intents, on wake, and stop alike.
        self._deliveries: Dispatcher | DeliveryWorker | _DeliveredElsewhere = self.delivery or (
            _DeliveredElsewhere() if settings.delivery == "external" else self.dispatcher
        )
        self.engine = Engine(config, self.state, self.clock, on_intents=self._deliveries.committed)
        self.routers: Partitioned | None = None
        self.shards: Partitioned | None = None
        if settings.embedded:
            self.bus = bus_from_url(settings.bus_url, topic=settings.topic)
        else:
            self._partition(settings, config)
        # (events, answered when durable, whether the engine must see them all)
        self._ingest_queue: list[tuple[list[Event], asyncio.Future[None], bool]] = []
        self._ingest_writer: asyncio.Task[None] | None = None
        self._stamps = Stamps(self.clock)  # ``received``: strictly increasing
        self._housekeeping: asyncio.Task[None] | None = None
        self._trail_inbox: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_wake = asyncio.Event()
        self._stopped = False

    def _partition(self, settings: Settings, config: Config) -> None:
        """Kafka: routers per events partition, shards per engine-topic partition."""
        partitions = settings.engine_partitions
        events_bus = partitioned_bus_from_url(
            settings.bus_url, topic=settings.topic, partitions=settings.kafka_partitions
        )
        shard_bus = partitioned_bus_from_url(
            settings.bus_url, topic=settings.shard_topic, partitions=partitions
        )
        self.bus, self._events_bus, self.shard_bus = events_bus, events_bus, shard_bus
        router = Router(
            config, partitions, shard_bus.publish_to, shard_bus.publish_watermark, self.clock
        )
        routed = router_config(config)
        self.routers = Partitioned(
            ROUTER_GROUP,
            lambda p: Engine(
                routed,
                # Processed ids shared by all routers: a follower's leader may have
                # been routed from another partition.
                self.state.scoped(f"route/{p}", processed="route"),
                self.clock,
                forward=router.forward,
            ),
        )
        self.shards = Partitioned(
            SHARD_GROUP,
            lambda p: Engine(
                shard_config(config, p, partitions),
                self.state.scoped(f"shard/{p}"),
                self.clock,
                on_intents=self._deliveries.committed,
                ordered=True,
            ),
        )

    async def start(self) -> None:
        await self.store.start()
        if self._checkpointer is not None:
            self._checkpointer.start()
        await self.state.create_tables()
        if self.settings.embedded:
            await self.engine.load()
            self.bus.subscribe(ENGINE_GROUP, self._engine_batch)
        else:
            events_bus, shard_bus = self._events_bus, self.shard_bus
            if events_bus is None or shard_bus is None:
                raise TypeError("the Kafka buses are not set up")
            if self.routers is None or self.shards is None:
                raise TypeError("engine shards not set up")
            events_bus.subscribe(STORE_GROUP, self._store_batch)
            events_bus.subscribe_partitions(
                ROUTER_GROUP,
                self._partitioned_batch(self.routers),
                assigned=self.routers.assigned,
                revoked=self.routers.revoked,
            )
            shard_bus.subscribe_partitions(
                SHARD_GROUP,
                self._partitioned_batch(self.shards),
                assigned=self.shards.assigned,
                revoked=self.shards.revoked,
            )
            # Each group's first join waits out the broker's join window: together.
            await asyncio.gather(shard_bus.start(), events_bus.start())
        await self.bus.start()  # embedded; a no-op for an already started Kafka bus
        if self.settings.embedded:
            await self._recover()
            # After recovery: drained trail is stamped after what it replayed.
            self._trail_inbox = asyncio.create_task(self._drain_trail_forever())
        if self.delivery is not None:
            await self.delivery.start()
        elif self._deliveries is self.dispatcher:
            await self.dispatcher.start(exclusive=self.settings.embedded)
        self._housekeeping = asyncio.create_task(self._prune_forever(), name="runbell-retention")
        self._timer = asyncio.create_task(self._timer_forever(), name="runbell-engine-timer")
        log.info(
            "service_started",
            bus=self.settings.bus_url,
            database=redact_url(self.settings.database_url),
            automations=len(self.config.automations),
            channels=len(self.config.channels),
        )

    async def stop(self) -> None:
        """Stop everything; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        for task in (self._housekeeping, self._timer, self._trail_inbox):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._deliveries.stop()
        await self.channels.aclose()
        await close_all(*self.controllers.values())
        await self.bus.stop()
        if self.shard_bus is not None:
            await self.shard_bus.stop()
        await self.store.stop()
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        await self.db.dispose()

    async def ingest(self, events: Sequence[Event]) -> list[UUID]:
        """Accept events; returns once they are durable (store or broker).

        Concurrent callers are committed together (group commit): one writer
        drains everything queued since its last write in one transaction and
        one publish, in arrival order, then answers each caller. If that write
        fails, each caller's events are written again on their own, so only a
        caller whose own events cannot be written gets the error; the store
        takes each call's events in one transaction (all or nothing per call).
        """
        return await self._enqueue(events, engine_sees_all=True)

    async def ingest_trail(self, events: Sequence[Event]) -> list[UUID]:
        """The dispatcher's ``automation.action.*`` events: stored (and, on Kafka,
        published) like any event; on the embedded bus, whose one reader is the engine,
        only those some automation could match (``CandidateIndex``) are published.
        Recovery replays the others from the store after the checkpoint, harmlessly."""
        return await self._enqueue(events, engine_sees_all=False)

    async def _enqueue(self, events: Sequence[Event], *, engine_sees_all: bool) -> list[UUID]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ingest_queue.append((list(events), done, engine_sees_all))
        if self._ingest_writer is None or self._ingest_writer.done():
            self._ingest_writer = asyncio.create_task(self._write_ingested())
        await done
        return [e.id for e in events]

    async def _write_ingested(self) -> None:
        while self._ingest_queue:
            waiting, self._ingest_queue = self._ingest_queue, []
            callers: list[tuple[list[Event], asyncio.Future[None]]] = []
            unread: set[UUID] = set()  # trail events no automation could match
            for events, done, engine_sees_all in waiting:
                stamped = [event.with_received(self._stamps.next()) for event in events]
                callers.append((stamped, done))
                if self.settings.embedded and not engine_sees_all:  # Kafka publishes all
                    unread.update(e.id for e in stamped if not self.engine.index.candidates(e))
            combined = [event for stamped, _ in callers for event in stamped]
            stored: set[UUID] | None = None  # what the combined insert stored, once it has
            try:
                if self.settings.embedded:
                    # Store first, then the bus, in this one writer: bus order is
                    # arrival order, which the recovery watermark relies on.
                    stored = set(await self.store.insert(combined))
                await self._publish(combined, stored, unread)
            except Exception as exc:
                if len(callers) > 1:
                    # One caller's event (too large for the broker, unwritable...) must not
                    # fail the others: each caller's part again, alone, in arrival order
                    # (bus order stays arrival order). All or nothing per caller, as alone.
                    log.warning("ingest_batch_split", callers=len(callers), error=repr(exc))
                    for stamped, done in callers:
                        await self._write_alone(stamped, done, unread, stored)
                    continue
                for _, done in callers:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in callers:
                if not done.done():
                    done.set_result(None)

    async def _publish(
        self, stamped: list[Event], new: set[UUID] | None, unread: set[UUID]
    ) -> None:
        """Kafka (``new`` is None): every event. Embedded: the ones just stored, less
        the trail no automation reads."""
        if new is None:
            await self.bus.publish(stamped)
        else:
            await self.bus.publish([e for e in stamped if e.id in new and e.id not in unread])

    async def _write_alone(
        self,
        stamped: list[Event],
        done: asyncio.Future[None],
        unread: set[UUID],
        stored: set[UUID] | None,
    ) -> None:
        """One caller's part of a failed combined write. If the combined insert had
        committed (then the publish failed), only the publish is retried: inserting
        again would find the ids known and publish nothing."""
        try:
            if self.settings.embedded and stored is None:
                stored = set(await self.store.insert(stamped))
            await self._publish(stamped, stored, unread)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(None)

    async def _drain_trail_forever(self) -> None:
        """Ingest the trail a delivery worker process handed over (``delivery_trail``)."""
        path = self.db.url.database if self.db.dialect.name == "sqlite" else None
        # SQLite (a file): read the inbox only after a commit, and then one cheap row.
        poll = CommitPoll(path) if path and path != ":memory:" else None
        seen: int | None = None
        try:
            while True:
                if poll is not None:
                    try:
                        seen, found = poll.trail(seen)
                    except sqlite3.Error:  # drain the usual way; the poll asks again later
                        seen, found = None, True
                    if not found:
                        await asyncio.sleep(TRAIL_POLL_S)
                        continue
                if not await self._drain_trail():
                    seen = None  # what stays in the inbox is read again at the next poll
                    await asyncio.sleep(TRAIL_POLL_S)
        finally:
            if poll is not None:
                poll.close()

    async def _drain_trail(self) -> bool:
        """One page of the inbox into ingestion; False when it was not a full page (or
        failed), so the caller waits before the next."""
        handed: list[tuple[int, Event]] = []
        try:
            handed = await self.state.handed_trail(_TRAIL_PAGE)
            if handed:
                # The worker may have changed a paused flag before handing these:
                # the engine re-reads the flags before it sees them.
                self.state.paused_version += 1
                await self.ingest_trail([event for _, event in handed])
                await self.state.drop_trail([seq for seq, _ in handed])
        except Exception as exc:  # the rows stay in the inbox: the next pass retries
            log.error("trail_inbox_failed", error=str(exc))
            return False
        return len(handed) == _TRAIL_PAGE

    def wake_delivery(self) -> None:
        """Outbox rows are owed now (a replay): claim them."""
        self._deliveries.wake()

    async def _engine_batch(self, events: list[Event]) -> None:
        await self.engine.handle(events)
        self._timer_wake.set()  # the batch may have armed an earlier deadline

    def _partitioned_batch(self, group: Partitioned) -> PartitionHandler:
        async def handle(partition: int, events: list[Event], watermark: datetime | None) -> None:
            await group.handle(partition, events, watermark)
            self._timer_wake.set()

        return handle

    def _timed(self) -> list[Engine | Partitioned]:
        """What holds deadlines: the one engine, or the routers' and shards' engines."""
        if self.routers is None or self.shards is None:
            return [self.engine]
        return [self.routers, self.shards]

    def _next_wakeup(self) -> datetime | None:
        moments = [m for t in self._timed() if (m := t.next_wakeup()) is not None]
        return min(moments, default=None)

    async def _tick(self) -> None:
        for timed in self._timed():
            await timed.tick()

    async def _timer_forever(self) -> None:
        """Settle deadlines when they fall due (a timer, not a poll)."""
        while True:
            self._timer_wake.clear()
            wake_at = self._next_wakeup()
            delay = None if wake_at is None else (wake_at - self.clock.now()).total_seconds()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._timer_wake.wait(), delay)
                continue
            try:
                await self._tick()
                stuck = self._next_wakeup() == wake_at
            except Exception as exc:  # the next wake-up retries
                log.error("engine_tick_failed", error=str(exc))
                stuck = True
            if stuck:  # never spin: a wake-up that settled nothing waits a second
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._timer_wake.wait(), 1.0)

    async def _store_batch(self, events: list[Event]) -> None:
        await self.store.insert(events)

    async def _recover(self) -> None:
        """Hand the engine what arrived after its last durable checkpoint."""
        watermark = await self.state.checkpoint(CHECKPOINT)
        replayed = 0
        while True:
            page = await self.store.replay(watermark, limit=_REPLAY_PAGE)
            if not page:
                break
            await self.bus.publish(page)
            replayed += len(page)
            watermark = page[-1].received
            if watermark is None:  # not stamped by ingestion: nothing to page by
                break
            self._stamps.last = watermark  # new events are stamped after these
        if replayed:
            log.info("engine_recovery", replayed=replayed)

    async def _prune_forever(self) -> None:
        while True:
            now = self.clock.now()
            try:
                pruned = await self.store.prune(now - self.settings.retention)
                await self.state.prune_processed(now - PROCESSED_RETENTION)
                if pruned:
                    log.info("events_pruned", count=pruned)
            except Exception as exc:  # retention must never stop the service
                log.error("retention_failed", error=str(exc))
            await self.clock.sleep_until(now + timedelta(hours=1))


class _DeliveredElsewhere:
    """``RUNBELL_DELIVERY=external``: `runbell deliver` processes watch the database
    (automations/service/worker.py), so there is nothing to start, wake or stop here."""

    def committed(self, _firings: Sequence[Any]) -> None:
        return None

    def wake(self) -> None:
        return None

    async def stop(self) -> None:
        return None
