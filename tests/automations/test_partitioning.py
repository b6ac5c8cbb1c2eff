"""Engine shards and routers on the real state store: ownership, fencing, ordering."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from automations.engine import Engine
from automations.engine.partitioning import Router, router_config, shard_config, shard_of
from automations.spec import Config
from automations.state import StateStore
from automations.state.engine import Fenced
from events.database import create_engine
from events.model import Event
from events.testing import FakeClock
from tests.automations.test_engine import config

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

YAML = """
automations:
  - name: two-failures
    trigger:
      type: event
      expect: ["flow-run.Failed"]
      for_each: ["related:deployment:resource.id"]
      threshold: 2
      within: 30m
    actions: [{type: do-nothing}]
"""


def _config(tmp_path: Path, text: str = YAML) -> Config:
    return config(tmp_path, text)


def _event(n: int, name: str = "flow-run.Failed", **extra: Any) -> Event:
    occurred = T0 + timedelta(minutes=n)
    return Event.model_validate(
        {
            "id": str(UUID(int=n)),
            "occurred": occurred.isoformat(),
            "received": occurred.isoformat(),
            "event": name,
            "resource": {"resource.id": f"flow-run.{n}"},
            "related": [{"resource.id": "deployment.etl", "resource.role": "deployment"}],
            **extra,
        }
    )


@pytest.fixture
async def store(url: str) -> AsyncIterator[StateStore]:
    """On SQLite and PostgreSQL (``url``): the fence runs as each one's own SQL."""
    db = create_engine(url)
    state = StateStore(db)
    await state.create_tables()
    yield state
    await db.dispose()


async def _owner(config: Config, state: StateStore, clock: FakeClock, **kw: Any) -> Engine:
    engine = Engine(config, state, clock, record=True, **kw)
    await state.claim()
    await engine.load()
    return engine


def test_shards_split_the_automations_completely_and_disjointly(tmp_path: Path) -> None:
    names = "\n".join(
        f"  - name: a{i}\n    trigger: {{type: event, expect: [x{i}]}}\n"
        "    actions: [{type: do-nothing}]"
        for i in range(50)
    )
    config = _config(tmp_path, f"automations:\n{names}\n")
    owned = [[a.name for a in shard_config(config, p, 7).automations] for p in range(7)]
    flat = [name for names in owned for name in names]
    assert sorted(flat) == sorted(a.name for a in config.automations)  # each exactly once
    assert all(shard_of(name, 7) == p for p, names in enumerate(owned) for name in names)
    assert sum(1 for names in owned if names) > 1  # actually spread


async def test_a_new_owner_continues_the_bucket_and_fences_the_old_one(
    tmp_path: Path, store: StateStore
) -> None:
    config, clock = _config(tmp_path), FakeClock(T0)
    old = await _owner(config, store.scoped("shard/3"), clock)
    await old.handle([_event(1)])  # the bucket counts 1 of 2
    new = await _owner(config, store.scoped("shard/3"), clock)  # rebalance: claimed again

    with pytest.raises(Fenced):
        await old.handle([_event(2)])
    assert await store.firings() == []  # the stale owner wrote nothing

    await new.handle([_event(2)])  # the new owner read the count the old one committed
    [firing] = await store.firings()
    assert firing.automation == "two-failures"
    assert set(firing.event_ids) == {str(UUID(int=1)), str(UUID(int=2))}


async def test_scopes_keep_their_own_processed_ids(tmp_path: Path, store: StateStore) -> None:
    """One event routed to two shards is processed in each; redelivered, in neither."""
    config, clock = _config(tmp_path), FakeClock(T0)
    first = await _owner(config, store.scoped("shard/0"), clock)
    second = await _owner(config, store.scoped("shard/1"), clock)
    for engine in (first, second, first, second):
        await engine.handle([_event(1), _event(2)])
    assert len(first.recorded) == 1
    assert len(second.recorded) == 1


async def test_router_holds_a_follower_until_its_leader_then_forwards_both_in_order(
    tmp_path: Path, store: StateStore
) -> None:
    config, clock = _config(tmp_path), FakeClock(T0)
    forwarded: list[list[str]] = []

    async def forward(events: list[Event]) -> None:
        forwarded.append([str(e.id) for e in events])

    router = await _owner(router_config(config), store.scoped("route/0"), clock, forward=forward)
    leader, follower = _event(1), _event(2, follows=str(UUID(int=1)))
    await router.handle([follower])
    assert forwarded == []
    await router.handle([leader])
    assert forwarded == [[str(leader.id), str(follower.id)]]
    await router.handle([leader])  # redelivered: nothing forwarded twice
    assert len(forwarded) == 1


async def test_a_shard_trusts_the_routers_order(tmp_path: Path, store: StateStore) -> None:
    """A shard never holds: its leader may have been routed to another shard."""
    config, clock = _config(tmp_path), FakeClock(T0)
    shard = await _owner(config, store.scoped("shard/0"), clock, ordered=True)
    await shard.handle([_event(5, follows=str(UUID(int=99))), _event(6)])
    assert len(shard.recorded) == 1


async def test_router_forwards_to_the_candidates_shards_then_a_watermark(
    tmp_path: Path,
) -> None:
    text = YAML + (
        "  - name: other\n    trigger: {type: event, expect: [flow-run.Completed]}\n"
        "    actions: [{type: do-nothing}]\n"
    )
    config, clock = _config(tmp_path, text), FakeClock(T0 + timedelta(hours=1))
    sent: list[tuple[int, list[str]]] = []
    marks: list[tuple[list[int], datetime]] = []

    async def publish(batches: Mapping[int, Sequence[Event]]) -> None:
        sent.extend((partition, [e.event for e in events]) for partition, events in batches.items())

    async def watermark(partitions: Sequence[int], occurred: datetime) -> None:
        marks.append((list(partitions), occurred))

    router = Router(config, 64, publish, watermark, clock)
    await router.forward([_event(1), _event(2, event="flow-run.Completed")])
    assert sorted(sent) == sorted(
        [
            (shard_of("two-failures", 64), ["flow-run.Failed"]),
            (shard_of("other", 64), ["flow-run.Completed"]),
        ]
    )
    assert marks == [(list(range(64)), T0 + timedelta(minutes=2))]
    await router.forward([_event(3)])  # within WATERMARK_EVERY: no second watermark
    assert len(marks) == 1


async def test_a_leader_routed_from_another_partition_releases_the_follower(
    tmp_path: Path, store: StateStore
) -> None:
    config, clock = _config(tmp_path), FakeClock(T0)
    forwarded: list[str] = []

    async def forward(events: list[Event]) -> None:
        forwarded.extend(str(e.id) for e in events)

    routers = [
        await _owner(
            router_config(config),
            store.scoped(f"route/{p}", processed="route"),
            clock,
            forward=forward,
        )
        for p in (0, 1)
    ]
    leader, follower = _event(1), _event(2, follows=str(UUID(int=1)))
    await routers[0].handle([leader])
    await routers[1].handle([follower])  # its leader went through the other router
    assert forwarded == [str(leader.id), str(follower.id)]


async def test_a_shard_deadline_waits_for_the_routers_watermark(
    tmp_path: Path, store: StateStore
) -> None:
    """Wall time racing ahead of a router's backlog raises no false 'stale' alarm."""
    text = """
automations:
  - name: stuck
    trigger:
      type: event
      posture: Proactive
      after: [flow-run.Running]
      expect: [flow-run.Completed]
      for_each: [resource.id]
      within: 10m
    actions: [{type: do-nothing}]
"""
    config, clock = _config(tmp_path, text), FakeClock(T0)
    shard = await _owner(config, store.scoped("shard/0"), clock, ordered=True)
    await shard.handle([_event(0, "flow-run.Running")])  # occurred T0: due at T0+10m
    await clock.advance(timedelta(minutes=30))  # the router is 25 minutes behind...
    shard.advance_clock(T0 + timedelta(minutes=5))  # ...its watermark says so
    await shard.tick()
    assert shard.recorded == []
    shard.advance_clock(T0 + timedelta(minutes=11))
    await shard.tick()
    assert [(f.automation, f.at) for f in shard.recorded] == [("stuck", T0 + timedelta(minutes=10))]
