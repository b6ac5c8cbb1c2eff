"""The engine with its real state store: timers, resolve, restarts, redelivery, the index."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from automations.delivery.actions.context import template_context
from automations.engine import CandidateIndex, Engine
from automations.engine.replay import drive, replay, run_timers
from automations.spec import Config
from automations.spec.loader import load_config
from automations.state import StateStore
from events.database import create_engine
from events.model import Event
from events.testing import FakeClock
from notifiers import default_message

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

YAML = """
channels:
  team: {url: "json://127.0.0.1:9/x"}
automations:
  - name: etl-stale
    trigger:
      type: event
      posture: Proactive
      expect: ["flow-run.Completed"]
      match_related: {resource.role: deployment, resource.id: "deployment.etl"}
      within: 10m
    actions: [{type: notify, channel: team, subject: stale}]
    actions_on_resolve: [{type: notify, channel: team, subject: fresh again}]
  - name: two-failures
    trigger:
      type: event
      expect: ["flow-run.Failed"]
      for_each: ["related:deployment:resource.id"]
      threshold: 2
      within: 30m
    actions: [{type: notify, channel: team}]
"""


def config(tmp_path: Path, text: str = YAML) -> Config:
    path = tmp_path / "automations.yaml"
    path.write_text(text)
    return load_config([path], {})


def event(n: int, name: str, minutes: float, *, deployment: str = "etl", **extra: Any) -> Event:
    occurred = T0 + timedelta(minutes=minutes)
    return Event.model_validate(
        {
            "id": str(UUID(int=n)),
            "occurred": occurred.isoformat(),
            "received": (extra.pop("received", occurred)).isoformat(),
            "event": name,
            "resource": {"resource.id": f"flow-run.{n}"},
            "related": [{"resource.id": f"deployment.{deployment}", "resource.role": "deployment"}],
            **extra,
        }
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'engine.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[StateStore]:
    db = create_engine(store_url)
    state = StateStore(db)
    await state.create_tables()
    yield state
    await db.dispose()


def summary(engine: Engine) -> list[tuple[str, str, str]]:
    return [(f.automation, f.state, f.at.strftime("%H:%M")) for f in engine.recorded]


async def test_proactive_fires_at_deadline_and_resolves(tmp_path: Path, store: StateStore) -> None:
    """No completion for 10 minutes fires at the deadline; the late completion resolves it."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path), store, clock, record=True)
    await engine.load()
    events = [event(1, "flow-run.Completed", 2), event(2, "flow-run.Completed", 25)]
    await drive(engine, clock, events, T0 + timedelta(minutes=30))
    assert summary(engine) == [
        ("etl-stale", "triggered", "10:12"),
        ("etl-stale", "triggered", "10:22"),
        ("etl-stale", "resolved", "10:25"),
    ]
    outbox = await store.outbox()
    subjects = sorted(row.action["subject"] for row in outbox)
    assert subjects == ["fresh again", "stale", "stale"]


async def test_backlog_never_raises_a_false_stale_alarm(tmp_path: Path) -> None:
    """Down for an hour, then a backlog of completions: no alarm until the bus is quiet."""
    db = create_engine(f"sqlite:///{tmp_path / 'engine.db'}")
    try:
        store = StateStore(db)
        await store.create_tables()
        clock = FakeClock(T0)
        engine = Engine(config(tmp_path), store, clock, record=True)
        await engine.load()
        on_time = [event(n, "flow-run.Completed", 5 * n) for n in range(1, 4)]
        await drive(engine, clock, on_time, T0 + timedelta(minutes=15))
        # The process dies at 10:15 and comes back at 11:20; completions kept being
        # ingested every 5 minutes meanwhile and wait on the bus.
        await clock.set(T0 + timedelta(minutes=80))
        again = Engine(config(tmp_path), store, clock, record=True)
        await again.load()
        for n in range(4, 16):
            await run_timers(again, clock, clock.now())
            await clock.set(clock.now() + timedelta(seconds=1))
            await again.handle([event(n, "flow-run.Completed", 5 * n)])
        assert summary(engine) + summary(again) == []
        # Then the bus really is quiet: the alarm comes 10 minutes after the last completion.
        await run_timers(again, clock, clock.now() + timedelta(minutes=11))
        assert summary(again) == [("etl-stale", "triggered", "11:25")]
    finally:
        await db.dispose()


async def test_redelivered_batch_fires_once(tmp_path: Path, store: StateStore) -> None:
    """The same batch handled twice (a redelivery) creates no second firing or intent."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path), store, clock, record=True)
    await engine.load()
    batch = [event(1, "flow-run.Failed", 1), event(2, "flow-run.Failed", 2)]
    await engine.handle(batch)
    await engine.handle(batch)
    assert [f.automation for f in await store.firings()] == ["two-failures"]
    assert len(await store.outbox()) == 1


async def test_a_firing_carries_every_event_of_its_window(
    tmp_path: Path, store: StateStore
) -> None:
    """Events counted in earlier batches are still at hand for the firing's context (the
    engine keeps exactly the events some trigger state holds); an event no trigger keeps
    is not remembered at all."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path), store, clock, record=True)
    await engine.load()
    await engine.handle([event(1, "flow-run.Failed", 1)])
    await engine.handle([event(3, "flow-run.Crashed", 1.5)])  # no automation wants it
    await engine.handle([event(2, "flow-run.Failed", 2)])
    [fired] = [f for f in await store.firings() if f.automation == "two-failures"]
    ids = [str(UUID(int=2)), str(UUID(int=1))]
    assert fired.event_ids == ids
    assert [e["id"] for e in fired.context["events"]] == ids
    assert fired.context["event"]["id"] == ids[0]
    assert str(UUID(int=3)) not in engine._recent


SCENARIO = [
    event(1, "flow-run.Completed", 1),
    event(2, "flow-run.Failed", 3),
    event(3, "flow-run.Failed", 4, deployment="other"),
    event(4, "flow-run.Failed", 6),
    event(5, "flow-run.Completed", 30),
    event(6, "flow-run.Failed", 31),
    event(8, "flow-run.Failed", 33, follows=str(UUID(int=7))),
    event(7, "flow-run.Failed", 34, deployment="other"),
    event(9, "flow-run.Failed", 40, deployment="other"),
    event(10, "flow-run.Completed", 75),
]


@pytest.mark.parametrize("cut", range(len(SCENARIO) + 1))
async def test_restart_at_any_index_gives_the_same_firings(tmp_path: Path, cut: int) -> None:
    """Stopping after event `cut` and restarting from the database changes no firing."""
    until = T0 + timedelta(minutes=90)

    async def run(directory: Path, cut_at: int | None) -> list[tuple[str, str, str]]:
        db = create_engine(f"sqlite:///{directory / 'engine.db'}")
        try:
            store = StateStore(db)
            await store.create_tables()
            clock = FakeClock(T0)
            engine = Engine(config(directory), store, clock, record=True)
            await engine.load()
            if cut_at is None:
                await drive(engine, clock, SCENARIO, until)
                return summary(engine)
            await drive(engine, clock, SCENARIO[:cut_at], clock.now())
            first = summary(engine)
            again = Engine(config(directory), store, clock, record=True)
            await again.load()
            await drive(again, clock, SCENARIO[cut_at:], until)
            return first + summary(again)
        finally:
            await db.dispose()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    uninterrupted = await run(tmp_path / "a", None)
    assert ("two-failures", "triggered", "10:06") in uninterrupted
    assert await run(tmp_path / "b", cut) == uninterrupted


def test_index_narrows_candidates_to_the_watched_deployment() -> None:
    """1,000 automations on different deployments: an event reaches only its own."""
    automations = [
        {
            "name": f"watch-{i}",
            "trigger": {
                "type": "event",
                "expect": ["flow-run.Failed"],
                "match_related": {"resource.role": "deployment", "resource.id": f"deployment.{i}"},
            },
            "actions": [{"type": "do-nothing"}],
        }
        for i in range(1000)
    ] + [
        {
            "name": "any-failure",
            "trigger": {"type": "event", "expect": ["*.Failed"]},
            "actions": [{"type": "do-nothing"}],
        }
    ]
    parsed = Config.model_validate({"automations": automations})
    index = CandidateIndex(parsed.automations)
    hit = event(1, "flow-run.Failed", 0, deployment="7")
    assert sorted(index.candidates(hit)) == ["any-failure", "watch-7"]
    assert index.candidates(event(2, "flow-run.Completed", 0)) == ["any-failure"]
    assert yaml.safe_dump  # the table above is what a YAML file would hold


HYGIENE = """
channels:
  team: {url: "json://127.0.0.1:9/x"}
silences:
  - name: staging-maintenance
    matchers: {related:deployment:resource.id: deployment.staging}
    starts: "2026-11-21T09:00:00Z"
    ends: "2026-11-21T11:00:00Z"
automations:
  - name: failures
    cooldown: 10m
    trigger:
      type: event
      expect: ["flow-run.Failed"]
      for_each: ["related:deployment:resource.id"]
    actions: [{type: notify, channel: team}]
  - name: own-events
    trigger: {type: event}
    actions: [{type: do-nothing}]
"""


async def test_silence_and_cooldown_record_but_suppress(tmp_path: Path, store: StateStore) -> None:
    """A silenced or cooled-down firing is recorded (silenced) and owes no action."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path, HYGIENE), store, clock, record=True)
    await engine.load()
    await engine.handle(
        [
            event(1, "flow-run.Failed", 1, deployment="staging"),  # silenced
            event(2, "flow-run.Failed", 2),  # fires
            event(3, "flow-run.Failed", 5),  # within the 10m cooldown
            event(4, "flow-run.Failed", 13),  # after it
        ]
    )
    failures = [f for f in engine.recorded if f.automation == "failures"]
    assert [(f.event_ids[0][-1], f.silenced) for f in failures] == [
        ("1", True),
        ("2", False),
        ("3", True),
        ("4", False),
    ]
    assert [f.context["muted"] for f in failures] == [
        "silence:staging-maintenance",
        None,
        "cooldown",
        None,
    ]
    owed = {row.firing_id for row in await store.outbox() if row.automation == "failures"}
    assert owed == {failures[1].id, failures[3].id}


async def test_an_automation_never_sees_its_own_events(tmp_path: Path, store: StateStore) -> None:
    """A catch-all trigger ignores automation.* events about itself, not about others."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path, HYGIENE), store, clock, record=True)
    await engine.load()
    own = Event.model_validate(
        {
            "id": str(UUID(int=50)),
            "occurred": T0.isoformat(),
            "event": "automation.action.executed",
            "resource": {"resource.id": "automation.own-events"},
        }
    )
    other = own.model_copy(
        update={"id": UUID(int=51), "resource": {"resource.id": "automation.failures"}}
    )
    await engine.handle([own, other])
    assert [f.event_ids for f in engine.recorded] == [[str(UUID(int=51))]]


async def test_paused_automation_records_but_does_not_act(
    tmp_path: Path, store: StateStore
) -> None:
    """After pause-automation, firings are recorded as muted; after resume they act again."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path, HYGIENE), store, clock, record=True)
    await engine.load()
    await store.set_paused("failures", True)
    await engine.handle([event(1, "flow-run.Failed", 1)])
    await store.set_paused("failures", False)
    await engine.handle([event(2, "flow-run.Failed", 2, deployment="other")])
    muted = [f.context["muted"] for f in engine.recorded if f.automation == "failures"]
    assert muted == ["paused", None]


async def test_redelivery_mixed_with_new_events(tmp_path: Path, store: StateStore) -> None:
    """A batch holding an old and a new id: the old is skipped, the new counts once."""
    clock = FakeClock(T0)
    engine = Engine(config(tmp_path), store, clock, record=True)
    await engine.load()
    first = event(1, "flow-run.Failed", 1)
    await engine.handle([first])
    await engine.handle([first, event(2, "flow-run.Failed", 2)])
    assert [f.event_ids for f in engine.recorded] == [[str(UUID(int=2)), str(UUID(int=1))]]


async def test_a_failed_commit_leaves_memory_as_it_was(tmp_path: Path, store: StateStore) -> None:
    """The database refuses a batch; redelivered, it counts exactly once (no double count)."""
    from sqlalchemy import text

    clock = FakeClock(T0)
    engine = Engine(config(tmp_path), store, clock, record=True)
    await engine.load()
    await engine.handle([event(1, "flow-run.Failed", 1)])  # 1 of the 2 needed
    async with store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE firings RENAME TO firings_away"))
    with pytest.raises(Exception, match="firings"):
        await engine.handle([event(2, "flow-run.Failed", 2)])  # would fire: threshold 2
    async with store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE firings_away RENAME TO firings"))
    assert engine.recorded == []
    await engine.handle([event(2, "flow-run.Failed", 2)])  # the bus delivers it again
    await engine.handle([event(3, "flow-run.Failed", 3)])  # a new window: 1 of 2
    assert [f.event_ids for f in engine.recorded] == [[str(UUID(int=2)), str(UUID(int=1))]]


@pytest.mark.parametrize("automation", ["etl", "ünïcode ✓", ""])
def test_firing_id_is_time_ordered_and_deterministic(automation: str) -> None:
    """48 bits of ``at`` in ms (they sort by time), then uuid5 of the firing key."""
    from uuid import NAMESPACE_URL, UUID, uuid5

    from automations.core.triggers import TriggerFiring
    from automations.engine import firing_id_for

    decided = TriggerFiring(automation, "trigger", "triggered", T0, {"a": "b"}, ("e1", "e2"))
    later = TriggerFiring(
        automation, "trigger", "triggered", T0 + timedelta(milliseconds=1), {"a": "b"}, ("e1",)
    )
    made = UUID(firing_id_for(decided))
    assert firing_id_for(decided) == str(made)  # canonical text, the same every time
    assert made.version == 8
    assert made.int >> 80 == int(T0.timestamp() * 1000)
    hashed = uuid5(uuid5(NAMESPACE_URL, "https://runbell.dev/firing"), decided.key)
    keep = (1 << 80) - 1 ^ (0xF << 76)  # below the timestamp, without the version nibble
    assert made.int & keep == hashed.int & keep
    assert firing_id_for(decided) < firing_id_for(later)


PROACTIVE_YAML = """
channels: {c: {url: "json://127.0.0.1:9/x"}}
automations:
  - name: etl-sla
    trigger:
      type: event
      posture: Proactive
      after: ["flow-run.Running"]
      expect: ["flow-run.Completed"]
      for_each: [resource.id]
      within: 2h
    actions: [{type: notify, channel: c}]
"""


async def test_a_proactive_firing_carries_what_it_expected_into_its_message(
    tmp_path: Path,
) -> None:
    """The firing's context names the expected events and window; the default message says so."""
    (tmp_path / "a.yaml").write_text(PROACTIVE_YAML)
    config = load_config([tmp_path / "a.yaml"], {})
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    running = Event.model_validate(
        {
            "id": "0190b6b0-0000-7000-8000-000000000001",
            "occurred": t0.isoformat(),
            "event": "flow-run.Running",
            "resource": {"resource.id": "flow-run.1", "resource.name": "nightly-etl"},
        }
    )
    [firing] = await replay(config, [running], until=t0 + timedelta(hours=3))
    assert firing.context["expected"] == {"expect": ["flow-run.Completed"], "within_s": 7200.0}
    message = default_message(template_context(firing))
    assert message.subject == "Flow run 'nightly-etl': no flow-run.Completed within 2h"
