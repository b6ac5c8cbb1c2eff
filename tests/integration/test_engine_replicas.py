"""Engine replicas on Kafka + PostgreSQL: they share the work and never share a bucket.

Two services join the same consumer groups on a real broker (Tansu) and one
PostgreSQL database. Buckets that gather many flow runs (per deployment, and one
for everything) get their events from different bus partitions — different
resource ids — and across two rebalances (B joins, then A leaves), yet each
counts every event exactly once and fires exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import func, select

from automations.engine.partitioning import Partitioned, shard_of
from automations.service import Service
from automations.service.settings import Settings
from automations.spec import Config
from automations.spec.loader import load_config
from automations.state import FiringRow, ProcessedRow
from automations.state.model import EngineScopeRow
from events.model import Event
from events.testing import FakeClock

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
ENGINE_PARTITIONS = 6
DEPLOYMENTS = 6

YAML = f"""
automations:
  - name: deployment-failures
    trigger:
      type: event
      expect: [flow-run.Failed]
      for_each: ["related:deployment:resource.id"]
      threshold: 3
      within: 1d
    actions: [{{type: do-nothing}}]
  - name: all-failures
    trigger: {{type: event, expect: [flow-run.Failed], threshold: {3 * DEPLOYMENTS}, within: 1d}}
    actions: [{{type: do-nothing}}]
  - name: each-failure
    trigger: {{type: event, expect: [flow-run.Failed], for_each: [resource.id], within: 0}}
    actions: [{{type: do-nothing}}]
"""


def _failed(deployment: int) -> Event:
    return Event.model_validate(
        {
            "id": str(uuid4()),
            "occurred": "2026-11-21T11:36:31Z",
            "event": "flow-run.Failed",
            "resource": {"resource.id": f"flow-run.{uuid4()}"},
            "related": [
                {"resource.id": f"deployment.d{deployment}", "resource.role": "deployment"}
            ],
        }
    )


def _setup(
    tmp_path: Path, text: str, kafka_url: str, database_url: str, topic: str
) -> tuple[Config, Settings]:
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(text)
    settings = Settings(
        bus_url=kafka_url,
        database_url=database_url,
        topic=topic,
        kafka_partitions=4,
        engine_partitions=ENGINE_PARTITIONS,
    )
    return load_config([config_file], {}), settings


@asynccontextmanager
async def _replica(settings: Settings, config: Config) -> AsyncIterator[Service]:
    service = Service(settings, config)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _expected_keys(service: Service, events: Sequence[Event]) -> set[str]:
    """The shard-scoped processed ids each event must leave behind."""
    names = [a.name for a in service.config.automations]
    scopes = [service.state.scoped(f"shard/{p}") for p in range(ENGINE_PARTITIONS)]
    return {
        scopes[shard_of(name, ENGINE_PARTITIONS)].processed_key(event.id)
        for event in events
        for name in names
    }


async def _until_processed(service: Service, events: Sequence[Event], timeout: float = 60) -> None:
    assert service.shards is not None
    wanted = _expected_keys(service, events)
    table = ProcessedRow.__table__  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        async with service.db.connect() as conn:
            rows = await conn.execute(
                select(table.c.event_id).where(table.c.event_id.in_(list(wanted)))
            )
            missing = wanted - {r[0] for r in rows}
        if not missing:
            return
        assert time.monotonic() < deadline, f"{len(missing)} of {len(wanted)} never processed"
        with contextlib.suppress(TimeoutError):
            await service.shards.progressed(0.5)


def _groups(service: Service) -> list[Partitioned]:
    assert service.shards is not None
    assert service.routers is not None
    return [service.shards, service.routers]


async def _until(done: Callable[[], bool], services: Sequence[Service], why: str) -> None:
    """Re-check ``done`` at every rebalance of the services' groups (bounded)."""
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, why
        waits = [asyncio.ensure_future(g.rebalanced(1.0)) for s in services for g in _groups(s)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def _firings(service: Service) -> dict[str, list[dict[str, Any]]]:
    table = FiringRow.__table__  # type: ignore[attr-defined]
    found: dict[str, list[dict[str, Any]]] = {}
    async with service.db.connect() as conn:
        for row in await conn.execute(select(table)):
            found.setdefault(row.automation, []).append(dict(row._mapping))
    return found


async def test_replicas_share_partitions_and_hand_state_over(
    tmp_path: Path, kafka_url: str, fresh_postgres_url: str, unique_topic: str
) -> None:
    config, settings = _setup(tmp_path, YAML, kafka_url, fresh_postgres_url, unique_topic)
    phases = [[_failed(d) for d in range(DEPLOYMENTS)] for _ in range(3)]

    a = Service(settings, config)
    await a.start()
    try:
        await a.ingest(phases[0])  # A alone owns every partition
        await _until_processed(a, phases[0])
        async with _replica(settings, config) as b:
            a_shards, a_routes, b_shards, b_routes = _groups(a) + _groups(b)
            await _until(
                lambda: (
                    bool(a_shards.engines and b_shards.engines)
                    and bool(a_routes.engines and b_routes.engines)
                ),
                [a, b],
                "the consumer groups never rebalanced to B",
            )
            # Never the same shard in two places: no bucket is shared.
            assert not set(a_shards.engines) & set(b_shards.engines)
            await b.ingest(phases[1])
            await _until_processed(b, phases[1])
            await a.stop()  # A leaves the group: B takes over A's partitions
            await _until(
                lambda: len(b_shards.engines) == ENGINE_PARTITIONS and len(b_routes.engines) == 4,
                [b],
                "B never took over A's partitions",
            )
            await b.ingest(phases[2])
            await _until_processed(b, phases[2])
            firings = await _firings(b)
            scopes = EngineScopeRow.__table__  # type: ignore[attr-defined]
            async with b.db.connect() as conn:
                top_epoch = (await conn.execute(select(func.max(scopes.c.epoch)))).scalar()
    finally:
        await a.stop()

    per_deployment = [f["bucket"] for f in firings.get("deployment-failures", [])]
    assert sorted(b["related:deployment:resource.id"] for b in per_deployment) == [
        f"deployment.d{d}" for d in range(DEPLOYMENTS)
    ], per_deployment  # each bucket fired once, with events from three phases
    assert len(firings.get("all-failures", [])) == 1
    assert len(firings.get("each-failure", [])) == 3 * DEPLOYMENTS
    assert top_epoch is not None and top_epoch >= 3, "no scope was handed over twice"


PROACTIVE_YAML = """
automations:
  - name: stuck-run
    trigger:
      type: event
      posture: Proactive
      after: [flow-run.Running]
      expect: [flow-run.Completed, flow-run.Failed]
      for_each: [resource.id]
      within: 10m
    actions: [{type: do-nothing}]
"""


async def test_a_shard_settles_proactive_deadlines_on_event_time(
    tmp_path: Path, kafka_url: str, fresh_postgres_url: str, unique_topic: str
) -> None:
    """Deadlines live in the shard that owns the automation and fire from its timer."""
    config, settings = _setup(tmp_path, PROACTIVE_YAML, kafka_url, fresh_postgres_url, unique_topic)
    clock = FakeClock(T0)
    running = Event.model_validate(
        {
            "id": str(uuid4()),
            "occurred": T0.isoformat(),
            "event": "flow-run.Running",
            "resource": {"resource.id": "flow-run.stuck"},
        }
    )
    service = Service(settings, config, clock=clock)
    await service.start()
    try:
        assert service.shards is not None
        await service.ingest([running])
        await _until_processed(service, [running])
        wake = service.shards.next_wakeup()
        assert wake == T0 + timedelta(minutes=10), wake  # armed in the owning shard
        await clock.advance(timedelta(minutes=9))
        await service.shards.tick()
        assert "stuck-run" not in await _firings(service)  # not yet
        await clock.advance(timedelta(minutes=2))
        await service.shards.tick()  # (or the service's own timer got there first)
        [firing] = (await _firings(service))["stuck-run"]
        assert firing["bucket"] == {"resource.id": "flow-run.stuck"}
        assert firing["at"] == T0 + timedelta(minutes=10)
    finally:
        await service.stop()
