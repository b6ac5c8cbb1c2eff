"""The event bus contract, run against the in-process bus and a real Kafka broker (Tansu).

Kafka tests pay about 5 s per consumer-group join on Tansu, so each test joins
as few groups as its behaviour needs. Nothing sleeps: handlers collect events and
set an ``asyncio.Event`` that the test waits on with a timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from events._kafka_bus import KafkaBus, parse_kafka_url
from events._memory_bus import MemoryBus
from events.bus import EventBus, PartitionedBus, bus_from_url, partitioned_bus_from_url
from events.errors import BusError
from events.model import Event

PREFECT_SAMPLES = sorted((Path(__file__).parents[1] / "fixtures" / "prefect").glob("*.json"))
T0 = datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=UTC)
WAIT_S = 30.0  # covers a Tansu group join (~5 s) with a wide margin

BusFactory = Callable[[], EventBus]


def make_event(seq: int, resource_id: str = "flow-run.1", **payload: object) -> Event:
    return Event(
        id=uuid4(),
        occurred=T0,
        event="flow-run.Completed",
        resource={"resource.id": resource_id, "resource.name": f"run-{seq}"},
        related=[{"resource.id": "deployment.d1", "resource.role": "deployment"}],
        payload={"seq": seq, **payload},
    )


def prefect_events() -> list[Event]:
    return [Event.model_validate(json.loads(path.read_text())) for path in PREFECT_SAMPLES]


class Collector:
    """A batch handler that records what it gets and signals once it has ``expected`` events."""

    def __init__(self, expected: int, *, fail_first: int = 0) -> None:
        self.expected = expected
        self.fail_first = fail_first
        self.calls = 0
        self.attempted: list[list[Event]] = []
        self.events: list[Event] = []
        self.reached = asyncio.Event()

    async def __call__(self, batch: list[Event]) -> None:
        self.calls += 1
        self.attempted.append(list(batch))
        if self.calls <= self.fail_first:
            raise RuntimeError(f"handler failure {self.calls}")
        self.events.extend(batch)
        if len(self.events) >= self.expected:
            self.reached.set()

    async def wait(self, timeout: float = WAIT_S) -> list[Event]:
        await asyncio.wait_for(self.reached.wait(), timeout)
        return self.events


def group_name() -> str:
    # Tansu keeps groups across topics: a fresh name keeps tests independent.
    return f"group-{uuid4().hex[:12]}"


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
def bus_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("kafka_url")
    return url


@pytest.fixture
async def bus_factory(bus_url: str, unique_topic: str) -> AsyncIterator[BusFactory]:
    """Unstarted buses on one fresh topic (subscribe first, then start); all stopped after."""
    made: list[EventBus] = []

    def make() -> EventBus:
        bus: EventBus
        if bus_url.startswith("memory://"):
            bus = MemoryBus(bus_url, unique_topic, retry_initial=0.01, retry_max=0.05)
        else:
            bus = KafkaBus(bus_url, unique_topic, retry_initial=0.01, retry_max=0.05)
        made.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in made:
            await bus.stop()


@pytest.fixture
async def bus(bus_factory: BusFactory) -> EventBus:
    return bus_factory()


# -- contract --------------------------------------------------------------


async def test_round_trip_keeps_every_field(bus: EventBus) -> None:
    """Published events (payload, labels, Prefect origin) arrive unchanged."""
    sent = [*prefect_events(), make_event(1, nested={"a": [1, 2.5, None, "x"]}, unicode="é✓")]
    received = Collector(len(sent))
    bus.subscribe(group_name(), received)
    await bus.start()

    await bus.publish(sent)

    got = await received.wait()
    assert sorted(got, key=lambda e: str(e.id)) == sorted(sent, key=lambda e: str(e.id))
    assert any(e.origin is not None for e in got)
    by_id = {e.id: e for e in got}
    assert all(by_id[e.id].to_prefect() == e.to_prefect() for e in sent if e.origin)


async def test_per_resource_order_is_preserved(bus: EventBus) -> None:
    """Events of one resource are handled in publish order, across batches and publishes."""
    resources = [f"flow-run.{n}" for n in range(5)]
    sent = [make_event(seq, resources[seq % 5]) for seq in range(100)]
    received = Collector(len(sent))
    bus.subscribe(group_name(), received, max_batch=7)
    await bus.start()

    await bus.publish(sent[:60])
    await bus.publish(sent[60:])

    got = await received.wait()
    assert len(got) == len(sent)
    for resource in resources:
        seqs = [e.payload["seq"] for e in got if e.resource_id == resource]
        assert seqs == sorted(seqs)
        assert len(seqs) == 20
    assert max(len(batch) for batch in received.attempted) <= 7


async def test_two_groups_each_receive_everything(bus: EventBus) -> None:
    """Every consumer group gets every event, independently of the others."""
    sent = [make_event(seq, f"flow-run.{seq % 3}") for seq in range(30)]
    first, second = Collector(len(sent)), Collector(len(sent))
    bus.subscribe(group_name(), first)
    bus.subscribe(group_name(), second)
    await bus.start()

    await bus.publish(sent)

    for collector in (first, second):
        got = await collector.wait()
        assert {e.id for e in got} == {e.id for e in sent}


async def test_failed_batch_is_delivered_again(bus: EventBus) -> None:
    """A handler that raises gets the same events again (at-least-once); the failure is logged."""
    sent = [make_event(seq) for seq in range(10)]
    received = Collector(len(sent), fail_first=1)
    group = group_name()
    bus.subscribe(group, received)

    with capture_logs() as logs:
        await bus.start()
        await bus.publish(sent)
        got = await received.wait()

    failed_ids = {e.id for e in received.attempted[0]}
    assert failed_ids
    assert failed_ids <= {e.id for e in got}
    assert {e.id for e in got} == {e.id for e in sent}
    failures = [entry for entry in logs if entry["event"] == "bus_handler_failed"]
    assert failures
    assert failures[0]["group"] == group
    assert "handler failure 1" in failures[0]["error"]


async def test_committed_batch_is_not_delivered_again_after_restart(bus: EventBus) -> None:
    """After stop/start, a new consumer of the same group resumes after what was committed."""
    group = group_name()
    before = [make_event(seq, "flow-run.same") for seq in range(5)]
    after = [make_event(seq, "flow-run.same") for seq in range(5, 8)]
    first = Collector(len(before))
    bus.subscribe(group, first)
    await bus.start()
    await bus.publish(before)
    await first.wait()
    await bus.stop()

    second = Collector(len(after))
    bus.subscribe(group, second)
    await bus.start()
    await bus.publish(after)

    # Same key, same partition: a redelivered "before" would arrive first.
    got = await second.wait()
    assert [e.id for e in got] == [e.id for e in after]


# -- Kafka specifics -------------------------------------------------------


@pytest.mark.integration
async def test_invalid_record_is_skipped_and_does_not_block(
    kafka_url: str, unique_topic: str
) -> None:
    """A record that is not an event is logged and skipped; later events on its partition arrive."""
    bus = KafkaBus(kafka_url, unique_topic, retry_initial=0.01, retry_max=0.05)
    valid = [make_event(seq, "flow-run.same") for seq in range(3)]
    received = Collector(len(valid))
    bus.subscribe(group_name(), received)
    producer = AIOKafkaProducer(bootstrap_servers=parse_kafka_url(kafka_url))
    await producer.start()
    try:
        with capture_logs() as logs:
            await bus.start()
            # Same key as the valid events: same partition, ahead of them.
            await producer.send_and_wait(unique_topic, b"not json {", key=b"flow-run.same")
            await producer.send_and_wait(unique_topic, b'{"id": "nope"}', key=b"flow-run.same")
            await bus.publish(valid)
            got = await received.wait()
    finally:
        await producer.stop()
        await bus.stop()

    assert [e.id for e in got] == [e.id for e in valid]
    invalid = [entry for entry in logs if entry["event"] == "bus_invalid_record"]
    assert len(invalid) == 2
    assert {entry["topic"] for entry in invalid} == {unique_topic}
    assert all({"partition", "offset", "error"} <= entry.keys() for entry in invalid)


async def test_kafka_publish_before_start_is_a_bus_error() -> None:
    """Publishing on a Kafka bus that was not started raises BusError instead of losing events."""
    bus = KafkaBus("kafka://127.0.0.1:9", f"t-{uuid4().hex}")
    with pytest.raises(BusError, match="not started"):
        await bus.publish([make_event(1)])
    with pytest.raises(BusError, match="not started"):
        await bus.publish_to({0: [make_event(1)]})
    with pytest.raises(BusError, match="not started"):
        await bus.publish_watermark([0], T0)


async def test_unreachable_kafka_is_a_bus_error(unused_tcp_port: int) -> None:
    """Starting against a broker that is not there raises BusError, not an aiokafka error."""
    bus = KafkaBus(f"kafka://127.0.0.1:{unused_tcp_port}", f"t-{uuid4().hex}")
    with pytest.raises(BusError, match="is the broker up"):
        await bus.start()


@pytest.mark.parametrize(
    "url", ["kafka://", "kafka://host", "kafka://host:port", "http://host:9092", "kafka://:9092"]
)
def test_bad_kafka_url_is_rejected(url: str) -> None:
    """A malformed Kafka URL fails at construction with a hint."""
    with pytest.raises(ValueError, match=r"kafka://|host:port"):
        KafkaBus(url, "topic")


def test_bus_from_url_picks_the_implementation() -> None:
    """``memory://`` gives the in-process bus, ``kafka://`` the Kafka one."""
    assert isinstance(bus_from_url("memory://"), MemoryBus)
    kafka = bus_from_url("kafka://127.0.0.1:9092,127.0.0.1:9093", topic="t")
    assert isinstance(kafka, KafkaBus)
    assert kafka.topic == "t"
    assert parse_kafka_url(kafka.url) == ["127.0.0.1:9092", "127.0.0.1:9093"]


def test_only_kafka_is_a_partitioned_bus() -> None:
    """``partitioned_bus_from_url`` gives the Kafka bus; ``memory://`` (one log) is refused."""
    kafka = partitioned_bus_from_url("kafka://127.0.0.1:9092", topic="shards", partitions=3)
    assert isinstance(kafka, KafkaBus)
    assert kafka.topic == "shards"
    assert kafka._partitions == 3
    with pytest.raises(ValueError, match="kafka://host:port"):
        partitioned_bus_from_url("memory://")
    with pytest.raises(ValueError, match="kafka://host:port"):
        partitioned_bus_from_url("nats://127.0.0.1:4222")


# -- partitioned bus (Kafka) -----------------------------------------------


@pytest.mark.integration
async def test_partitioned_bus_hands_out_chosen_partitions_and_watermarks(
    kafka_url: str, unique_topic: str
) -> None:
    """publish_to lands each batch on its partition whatever the key; a watermark
    reaches every named partition's handler without an event; assigned names them all."""
    bus: PartitionedBus = partitioned_bus_from_url(kafka_url, topic=unique_topic, partitions=3)
    first = [make_event(seq, "flow-run.a") for seq in range(3)]
    second = [make_event(seq, "flow-run.a") for seq in range(3, 5)]  # same key, other partition
    later = T0 + timedelta(minutes=5)
    assigned: set[int] = set()
    events: dict[int, list[Event]] = {}
    marks: dict[int, datetime] = {}
    complete = asyncio.Event()

    async def on_assigned(partitions: set[int]) -> None:
        assigned.update(partitions)

    async def on_revoked(partitions: set[int]) -> None:
        """One member: no partition is taken away while the test runs."""

    async def handle(partition: int, batch: list[Event], watermark: datetime | None) -> None:
        events.setdefault(partition, []).extend(batch)
        if watermark is not None:
            marks[partition] = max(watermark, marks.get(partition, watermark))
        if len(marks) == 3 and all(mark == later for mark in marks.values()):
            complete.set()

    bus.subscribe_partitions(
        group_name(), handle, assigned=on_assigned, revoked=on_revoked, max_batch=2
    )
    await bus.start()
    try:
        await bus.publish_to({0: first, 2: second})
        await bus.publish_watermark([0, 1, 2], T0)
        await bus.publish_watermark([0, 1, 2], later)
        await asyncio.wait_for(complete.wait(), WAIT_S)
    finally:
        await bus.stop()

    assert assigned == {0, 1, 2}
    assert [e.id for e in events[0]] == [e.id for e in first]
    assert [e.id for e in events[2]] == [e.id for e in second]
    assert events.get(1, []) == []
    assert marks == {0: later, 1: later, 2: later}


# -- memory specifics ------------------------------------------------------


async def test_memory_drain_waits_for_every_group() -> None:
    """drain() returns once every group committed everything, and the consumed log is trimmed."""
    bus = MemoryBus("memory://", "t")
    first, second = Collector(50), Collector(50)
    bus.subscribe("a", first, max_batch=10)
    bus.subscribe("b", second, max_batch=3)
    await bus.start()
    try:
        await bus.publish([make_event(seq) for seq in range(50)])
        await bus.drain(timeout=5)
        assert len(first.events) == len(second.events) == 50
        assert bus._lag() == 0
        assert bus._log_events == []
    finally:
        await bus.stop()


async def test_memory_drain_times_out_while_a_handler_keeps_failing() -> None:
    """drain() is bounded: a group that never commits makes it raise TimeoutError."""
    bus = MemoryBus("memory://", "t", retry_initial=0.01, retry_max=0.01)
    bus.subscribe("stuck", Collector(1, fail_first=10**6))
    await bus.start()
    try:
        with capture_logs():
            await bus.publish([make_event(1)])
            with pytest.raises(TimeoutError):
                await bus.drain(timeout=0.2)
    finally:
        await bus.stop()


async def test_memory_publish_waits_for_the_slowest_group() -> None:
    """Backpressure: publish() waits while the slowest group lags capacity; nothing dropped."""
    bus = MemoryBus("memory://", "t", capacity=5)
    gate = asyncio.Event()
    received: list[Event] = []

    async def slow(batch: list[Event]) -> None:
        await gate.wait()
        received.extend(batch)

    fast = Collector(12)
    bus.subscribe("slow", slow, max_batch=2)
    bus.subscribe("fast", fast)
    await bus.start()
    try:
        publishing = asyncio.create_task(bus.publish([make_event(seq) for seq in range(12)]))
        done, _ = await asyncio.wait({publishing}, timeout=0.2)
        assert not done, "publish must wait while the slow group lags capacity"
        assert bus._lag() <= 5
        gate.set()
        await asyncio.wait_for(publishing, 5)
        await bus.drain(timeout=5)
        assert [e.payload["seq"] for e in received] == list(range(12))
        assert [e.payload["seq"] for e in fast.events] == list(range(12))
    finally:
        await bus.stop()


async def test_memory_keeps_events_published_before_start() -> None:
    """Events published before start() reach the groups registered before them."""
    bus = MemoryBus("memory://", "t")
    received = Collector(1)
    bus.subscribe("g", received)
    event = make_event(1)
    await bus.publish([event])
    await bus.start()
    try:
        assert [e.id for e in await received.wait(timeout=5)] == [event.id]
    finally:
        await bus.stop()


async def test_memory_stop_cancels_handler_and_redelivers_on_start() -> None:
    """stop() cancels an in-flight handler; its uncommitted batch comes again after start()."""
    bus = MemoryBus("memory://", "t")
    entered = asyncio.Event()

    async def hang(batch: list[Event]) -> None:
        entered.set()
        await asyncio.Event().wait()

    bus.subscribe("g", hang)
    await bus.start()
    sent = [make_event(seq) for seq in range(3)]
    await bus.publish(sent)
    await asyncio.wait_for(entered.wait(), 5)
    await bus.stop()

    again = Collector(3)
    bus.subscribe("g", again)
    await bus.start()
    try:
        assert [e.id for e in await again.wait(timeout=5)] == [e.id for e in sent]
    finally:
        await bus.stop()
