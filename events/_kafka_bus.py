"""The Kafka event bus, on FastStream's ``KafkaBroker`` (aiokafka underneath).

Invariants (see ``events/CONTRACTS.md``):

* every record is keyed by ``resource.id``: one resource's events stay in one
  partition, in publish order;
* ``publish`` returns once the broker acknowledged every record (``acks=all``);
* a consumer group commits a batch only after its handler returned; a handler
  that raises rewinds the batch's partitions (FastStream ``nack`` = ``seek``)
  and gets the same records again after a capped exponential backoff;
* a record that is not a valid event is logged (``bus_invalid_record``) and
  skipped: it is committed with its batch and never blocks the partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from faststream.exceptions import FastStreamException, NackMessage
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.exceptions import BatchBufferOverflowException
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from events._bus_common import BatchHandler, PartitionHandler, PartitionListener, back_off
from events.errors import BusError
from events.model import Event

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord
    from faststream.message import StreamMessage

__all__ = ["WATERMARK_HEADER", "KafkaBus", "parse_kafka_url"]

WATERMARK_HEADER = "runbell-watermark"
"""A record with this header carries no event: its value is an ISO 8601 event time
up to which the publisher has handed everything on (see ``publish_watermark``)."""

_RecordsHandler = Callable[["Sequence[ConsumerRecord[bytes, bytes]]"], Awaitable[None]]

_log = structlog.get_logger(__name__)

# FastStream logs every received/processed batch at its access-log level; those
# lines are per batch and belong at DEBUG. Its errors still come through.
_FASTSTREAM_LOGGER = logging.getLogger("runbell.bus.faststream")


def parse_kafka_url(url: str) -> list[str]:
    """``kafka://host:port[,host:port]`` → ``["host:port", ...]``."""
    scheme, sep, rest = url.partition("://")
    if scheme != "kafka" or not sep:
        raise ValueError(f"not a Kafka bus URL: {url!r}; write kafka://host:port[,host:port]")
    servers = [part.strip() for part in rest.rstrip("/").split(",") if part.strip()]
    for server in servers:
        host, colon, port = server.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"bad broker address {server!r} in {url!r}; write host:port")
    if not servers:
        raise ValueError(f"no broker address in {url!r}; write kafka://host:port")
    return servers


@dataclass(frozen=True)
class _Subscription:
    group: str
    handler: BatchHandler
    max_batch: int


@dataclass(frozen=True)
class _PartitionSubscription:
    group: str
    handler: PartitionHandler
    max_batch: int
    assigned: PartitionListener
    revoked: PartitionListener


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's hooks, narrowed to this bus's topic: partition numbers only."""

    def __init__(self, topic: str, sub: _PartitionSubscription) -> None:
        self.topic, self.sub = topic, sub

    def _ours(self, partitions: set[TopicPartition]) -> set[int]:
        return {tp.partition for tp in partitions if tp.topic == self.topic}

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sub.revoked(self._ours(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.sub.assigned(self._ours(assigned))


class KafkaBus:
    """The :class:`events.bus.PartitionedBus` on a Kafka topic.

    ``subscribe`` records the consumer groups; ``start`` creates the topic if it is
    missing, then builds and starts a fresh broker with one batch subscriber per
    group, so a stopped bus can be started again (re-subscribing a group replaces
    its handler). ``enable_idempotence`` stays off by default because Tansu, the
    local test broker, rejects the idempotent producer's ``InitProducerId``.
    """

    def __init__(
        self,
        url: str,
        topic: str,
        *,
        partitions: int = 4,
        enable_idempotence: bool = False,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
        graceful_timeout: float = 15.0,
        fetch_wait_ms: int = 10,
    ) -> None:
        self.url = url
        self.topic = topic
        self._servers = parse_kafka_url(url)
        self._partitions = partitions
        self._enable_idempotence = enable_idempotence
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._graceful_timeout = graceful_timeout
        # How long a fetch may wait for records, and a poll for a batch. Latency per
        # hop: the defaults (500 ms fetch, 200 ms batch + 200 ms idle pause) added
        # hundreds of ms per consumer hop on a quiet topic.
        self._fetch_wait_ms = fetch_wait_ms
        self._subscriptions: dict[str, _Subscription] = {}
        self._partitioned: dict[str, _PartitionSubscription] = {}
        self._broker: KafkaBroker | None = None

    # -- lifecycle ---------------------------------------------------------
    def subscribe(self, group: str, handler: BatchHandler, *, max_batch: int = 500) -> None:
        """Register ``handler`` for ``group``; takes effect at the next ``start()``."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._subscriptions[group] = _Subscription(group, handler, max_batch)

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
        revoked one returned; ``handler`` gets each partition's share of a batch.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._partitioned[group] = _PartitionSubscription(
            group, handler, max_batch, assigned, revoked
        )

    async def start(self) -> None:
        if self._broker is not None:
            return
        await self._ensure_topic()
        broker = self._build_broker()
        try:
            await broker.start()
        except (KafkaError, FastStreamException, OSError) as exc:
            await _quiet_stop(broker)
            raise BusError(
                f"could not start the Kafka bus on {self.url}: {exc!r}; is the broker up?"
            ) from exc
        self._broker = broker

    async def stop(self) -> None:
        """Stop consuming; an in-flight batch finishes (up to ``graceful_timeout``)."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.stop()

    # -- publishing --------------------------------------------------------
    async def publish(self, events: Sequence[Event]) -> None:
        """Send every event, then wait for all acknowledgements together."""
        broker = self._started()
        if not events:
            return
        try:
            # aiokafka batches what accumulates between sends: queue everything
            # first, then await the broker's acknowledgements as one group.
            futures = [
                await broker.publish(
                    event.to_json(),
                    self.topic,
                    key=event.resource_id.encode(),
                    no_confirm=True,
                )
                for event in events
            ]
        except (KafkaError, FastStreamException) as exc:
            raise BusError(f"could not publish to {self.topic!r}: {exc!r}") from exc
        await self._acknowledged(futures)

    async def publish_to(self, batches: Mapping[int, Sequence[Event]]) -> None:
        """Send events to chosen partitions, one produce batch per partition, acked together.

        For a topic whose consumers go by partition, not key (the engine shards)."""
        await self._send_batches({p: [e.to_json() for e in batch] for p, batch in batches.items()})

    async def publish_watermark(self, partitions: Sequence[int], occurred: datetime) -> None:
        """Tell each partition's consumer that event time has reached ``occurred``."""
        value = occurred.isoformat().encode()
        await self._send_batches({p: [value] for p in partitions}, {WATERMARK_HEADER: "1"})

    async def _send_batches(
        self, batches: Mapping[int, Sequence[bytes]], headers: dict[str, str] | None = None
    ) -> None:
        broker = self._started()
        futures: list[asyncio.Future[Any]] = []
        try:
            for partition, values in batches.items():
                rest, take = list(values), len(values)
                while rest:
                    try:
                        if take == 0:  # too big for a batch: it goes alone
                            take = 1
                            future = await broker.publish(
                                rest[0], self.topic, partition=partition, headers=headers,
                                no_confirm=True,
                            )  # fmt: skip
                        else:
                            future = await broker.publish_batch(
                                *rest[:take], topic=self.topic, partition=partition,
                                headers=headers, no_confirm=True,
                            )  # fmt: skip
                    except BatchBufferOverflowException as full:
                        take = full.message_position  # send what fits, then the rest
                        continue
                    futures.append(future)
                    rest = rest[take:]
                    take = len(rest)
        except (KafkaError, FastStreamException) as exc:
            raise BusError(f"could not publish to {self.topic!r}: {exc!r}") from exc
        await self._acknowledged(futures)

    def _started(self) -> KafkaBroker:
        if self._broker is None:
            raise BusError("the Kafka bus is not started; call start() before publish()")
        return self._broker

    async def _acknowledged(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for every queued record's acknowledgement; the first failure raises."""
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise BusError(
                    f"the broker did not acknowledge a record on {self.topic!r}: {result!r}"
                ) from result

    # -- internals ---------------------------------------------------------
    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._servers)
        try:
            await admin.start()
            response = await admin.create_topics(
                [NewTopic(self.topic, num_partitions=self._partitions, replication_factor=1)]
            )
        except KafkaError as exc:
            raise BusError(
                f"could not create topic {self.topic!r} on {self.url}: {exc!r}; is the broker up?"
            ) from exc
        finally:
            await admin.close()
        for topic_error in response.to_object()["topic_errors"]:
            code = topic_error["error_code"]
            if not code:
                continue
            error = for_code(code)(topic_error.get("error_message") or f"error code {code}")
            if not isinstance(error, TopicAlreadyExistsError):
                raise BusError(f"could not create topic {self.topic!r}: {error!r}") from error

    def _build_broker(self) -> KafkaBroker:
        broker = KafkaBroker(
            self._servers,
            acks="all",
            # Produce batches (publish_to) up to this size per partition and request.
            max_batch_size=512 * 1024,
            enable_idempotence=self._enable_idempotence,
            apply_types=False,
            graceful_timeout=self._graceful_timeout,
            logger=_FASTSTREAM_LOGGER,
            log_level=logging.DEBUG,
        )
        groups = [
            (sub.group, sub.max_batch, None, self._consumer(sub))
            for sub in self._subscriptions.values()
        ] + [
            (p.group, p.max_batch, _Rebalance(self.topic, p), self._partition_consumer(p))
            for p in self._partitioned.values()
        ]
        for group, max_batch, listener, consume in groups:
            broker.subscriber(
                # Created by _ensure_topic with the right partition count.
                Topic(self.topic, declare=False),
                batch=True,
                group_id=group,
                max_records=max_batch,
                fetch_max_wait_ms=self._fetch_wait_ms,
                batch_timeout_ms=self._fetch_wait_ms,
                auto_offset_reset="earliest",
                # Commit after the handler returns; on NackMessage seek back so
                # the same records come again.
                ack_policy=AckPolicy.NACK_ON_ERROR,
                decoder=_raw_records,
                listener=listener,
            )(consume)
        return broker

    def _consumer(self, sub: _Subscription) -> Any:
        async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
            events = _parse(records)
            if events:
                await sub.handler(events)

        return self._redelivering(sub.group, handle)

    def _partition_consumer(self, sub: _PartitionSubscription) -> Any:
        async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
            by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
            for record in records:
                by_partition.setdefault(record.partition, []).append(record)
            # Partitions are independent (the handler keeps state per partition):
            # their shares run side by side, so commits and acks overlap.
            results = await asyncio.gather(
                *(
                    sub.handler(
                        partition,
                        _parse([r for r in share if not _is_watermark(r)]),
                        _newest_watermark([r for r in share if _is_watermark(r)]),
                    )
                    for partition, share in by_partition.items()
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        return self._redelivering(sub.group, handle)

    def _redelivering(self, group: str, handle: _RecordsHandler) -> Any:
        """A batch whose handler raised is redelivered after a capped back-off."""
        failures = 0
        topic = self.topic

        async def consume(records: tuple[ConsumerRecord[bytes, bytes], ...]) -> None:
            nonlocal failures
            try:
                await handle(records)
            except Exception as exc:
                failures += 1
                # Sleeping here holds the partitions: nothing after this batch
                # is handed out before it is redelivered.
                await back_off(
                    exc,
                    group=group,
                    topic=topic,
                    attempt=failures,
                    initial=self._retry_initial,
                    maximum=self._retry_max,
                )
                raise NackMessage() from exc
            failures = 0

        return consume


def _is_watermark(record: ConsumerRecord[bytes, bytes]) -> bool:
    return any(name == WATERMARK_HEADER for name, _ in record.headers or ())


def _newest_watermark(records: Sequence[ConsumerRecord[bytes, bytes]]) -> datetime | None:
    newest: datetime | None = None
    for record in records:
        try:
            mark = datetime.fromisoformat((record.value or b"").decode())
        except ValueError:
            _log.warning("bus_invalid_watermark", topic=record.topic, offset=record.offset)
            continue
        newest = mark if newest is None or mark > newest else newest
    return newest


async def _raw_records(
    message: StreamMessage[tuple[ConsumerRecord[bytes, bytes], ...]],
) -> tuple[ConsumerRecord[bytes, bytes], ...]:
    """Hand the handler aiokafka's records: we parse them ourselves, per record."""
    return message.raw_message


def _parse(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Event]:
    events: list[Event] = []
    for record in records:
        try:
            if record.value is None:
                raise ValueError("record has no value")
            events.append(Event.model_validate_json(record.value))
        except (ValidationError, ValueError) as exc:
            _log.warning(
                "bus_invalid_record",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(exc),
            )
    return events


async def _quiet_stop(broker: KafkaBroker) -> None:
    try:
        await broker.stop()
    except (KafkaError, FastStreamException, OSError):
        _log.debug("bus_stop_failed", exc_info=True)
