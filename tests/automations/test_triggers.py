"""Trigger semantics, table-driven: YAML automation + events → expected firings.

Each case in ``trigger_cases/*.yaml`` goes through the real loader and the pure
evaluator, driven like ``runbell test``: events in arrival order, the lag-corrected
event clock for deadlines, held ``follows`` events released by the ordering state.
Times are offsets from T0 (seconds, or '90s', '10m', '2h').
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.core.triggers import (
    EventClock,
    OrderingState,
    State,
    TriggerEvaluator,
    TriggerFiring,
    admit,
    next_release,
    release,
)
from automations.spec.loader import load_config
from events.model import Event

CASES = Path(__file__).parent / "trigger_cases"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
_OFFSET = re.compile(r"^(-?\d+(?:\.\d+)?)([smh]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}


def _offset(value: Any) -> timedelta:
    found = _OFFSET.match(str(value).strip())
    assert found, f"bad offset {value!r}"
    return timedelta(seconds=float(found[1]) * _UNIT[found[2]])


def _id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"runbell-test/{name}")


def _labels(value: Any) -> dict[str, str]:
    return {"resource.id": value} if isinstance(value, str) else dict(value)


def _event(spec: dict[str, Any]) -> Event:
    occurred = T0 + _offset(spec["at"])
    received = T0 + _offset(spec["received"]) if "received" in spec else None
    return Event.model_validate(
        {
            "id": _id(spec["id"]),
            "occurred": occurred,
            "received": received,
            "event": spec["event"],
            "resource": _labels(spec.get("resource", "flow-run.1")),
            "related": spec.get("related", []),
            "follows": _id(spec["follows"]) if "follows" in spec else None,
        }
    )


def _load(tmp_path: Path, automations: list[dict[str, Any]]) -> list[TriggerEvaluator]:
    for automation in automations:
        automation.setdefault("actions", [{"type": "notify", "channel": "c"}])
    path = tmp_path / "automations.yaml"
    document = {"channels": {"c": {"url": "json://localhost"}}, "automations": automations}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return [TriggerEvaluator(a) for a in load_config([path], {}).automations]


@dataclass
class _Run:
    """The ``runbell test`` loop over pure evaluators; may restart (JSON round trip) anywhere."""

    evaluators: list[TriggerEvaluator]
    states: list[State]
    clock: EventClock
    ordering: OrderingState
    firings: list[TriggerFiring]

    @classmethod
    def start(cls, evaluators: list[TriggerEvaluator], at: datetime) -> _Run:
        states = [e.on_start(at, State()).state for e in evaluators]
        return cls(evaluators, states, EventClock(), OrderingState(), [])

    def restart(self) -> None:
        self.states = [State.from_json(s.to_json()) for s in self.states]

    def _evaluate(self, event: Event, now: datetime) -> None:
        for index, evaluator in enumerate(self.evaluators):
            outcome = evaluator.on_event(event, now, self.states[index])
            self.firings.extend(outcome.firings)
            self.states[index] = outcome.state

    def advance(self, wall: datetime) -> None:
        while (due := next_release(self.ordering)) is not None and due <= wall:
            self._tick(due)
            freed = release(due, self.ordering)
            self.ordering = freed.state
            for event in freed.ready:
                self._evaluate(event, due)
        self._tick(wall)

    def _tick(self, wall: datetime) -> None:
        as_of = self.clock.as_of(wall)
        for index, evaluator in enumerate(self.evaluators):
            outcome = evaluator.advance(as_of, self.states[index])
            self.firings.extend(outcome.firings)
            self.states[index] = outcome.state

    def feed(self, event: Event) -> None:
        arrival = event.received or event.occurred
        self.advance(arrival)
        self.clock = self.clock.observe(event, arrival)
        admitted = admit(event, arrival, self.ordering)
        self.ordering = admitted.state
        for ready in admitted.ready:
            self._evaluate(ready, arrival)


def _run(
    case: dict[str, Any],
    tmp_path: Path,
    restarts: set[int] | None = None,
    evaluators: list[TriggerEvaluator] | None = None,
) -> list[Any]:
    evaluators = evaluators or _load(tmp_path, case["automations"])
    events = sorted((_event(e) for e in case["events"]), key=lambda e: e.received or e.occurred)
    run = _Run.start(evaluators, T0 + _offset(case.get("start", 0)))
    for index, event in enumerate(events):
        if restarts and index in restarts:
            run.restart()
        run.feed(event)
    run.advance(T0 + _offset(case.get("until", "1h")))
    return run.firings


def _names() -> dict[UUID, str]:
    names: dict[UUID, str] = {}
    for path in CASES.glob("*.yaml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")):
            names.update({_id(e["id"]): e["id"] for e in case["events"]})
    return names


def _as_table(firings: list[TriggerFiring], names: dict[UUID, str]) -> list[dict[str, Any]]:
    return [
        {
            "automation": f.automation,
            "state": f.state,
            "at": (f.at - T0).total_seconds(),
            "bucket": f.bucket,
            "events": [names.get(UUID(i), i) for i in f.event_ids],
        }
        for f in firings
    ]


def _expected(case: dict[str, Any]) -> list[dict[str, Any]]:
    default = case["automations"][0]["name"]
    return [
        {
            "automation": f.get("automation", default),
            "state": f.get("state", "triggered"),
            "at": _offset(f["at"]).total_seconds(),
            "bucket": f.get("bucket", {}),
            "events": f.get("events", []),
        }
        for f in case["firings"] or []
    ]


def _cases() -> list[Any]:
    params = []
    for path in sorted(CASES.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")):
            params.append(pytest.param(case, id=f"{path.stem}:{case['name']}"))
    return params


@pytest.mark.parametrize("case", _cases())
def test_trigger_case(case: dict[str, Any], tmp_path: Path) -> None:
    """Each YAML case yields exactly its table of firings (state, at, bucket, events)."""
    assert _as_table(_run(case, tmp_path), _names()) == _expected(case), case["doc"]


@pytest.mark.parametrize("case", _cases())
def test_trigger_case_survives_restart_after_every_event(
    case: dict[str, Any], tmp_path: Path
) -> None:
    """Round-tripping state through JSON before every event changes no firing."""
    everywhere = set(range(len(case["events"])))
    assert _run(case, tmp_path, everywhere) == _run(case, tmp_path)


_PROPERTY_AUTOMATIONS: list[dict[str, Any]] = [
    {
        "name": "reactive",
        "trigger": {
            "type": "event",
            "expect": ["flow-run.Failed"],
            "for_each": ["resource.id"],
            "threshold": 2,
            "within": "2m",
        },
        "actions_on_resolve": [{"type": "notify", "channel": "c"}],
    },
    {
        "name": "zombie",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["flow-run.Running", "flow-run.heartbeat"],
            "expect": ["flow-run.heartbeat", "flow-run.Completed", "flow-run.Failed"],
            "for_each": ["resource.id"],
            "within": "90s",
        },
        "actions_on_resolve": [{"type": "notify", "channel": "c"}],
    },
    {
        "name": "stale",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "expect": ["flow-run.Completed"],
            "within": "3m",
        },
    },
    {
        "name": "sequence",
        "trigger": {
            "type": "sequence",
            "within": "10m",
            "triggers": [
                {"type": "event", "expect": ["flow-run.Running"]},
                {"type": "event", "expect": ["flow-run.Failed"], "within": "1m"},
            ],
        },
    },
]

_NAMES = ["flow-run.Running", "flow-run.heartbeat", "flow-run.Completed", "flow-run.Failed"]
_event_specs = st.lists(
    st.tuples(
        st.sampled_from(_NAMES),
        st.sampled_from(["flow-run.1", "flow-run.2"]),
        st.integers(min_value=0, max_value=900),  # occurred, seconds
        st.integers(min_value=0, max_value=120),  # arrival lag, seconds
        st.booleans(),  # redelivered?
    ),
    max_size=25,
)


def _events_of(specs: list[tuple[str, str, int, int, bool]], prefix: str) -> list[dict[str, Any]]:
    """Event specs for ``_run`` from generated tuples; a redelivery comes 7 s later."""
    events: list[dict[str, Any]] = []
    for index, (name, resource, at, lag, again) in enumerate(specs):
        spec = {"id": f"{prefix}{index}", "at": at, "received": at + lag, "event": name}
        events.append({**spec, "resource": resource})
        if again:
            events.append({**spec, "resource": resource, "received": at + lag + 7})
    return events


@settings(max_examples=60, deadline=None)
@given(specs=_event_specs, restarts=st.sets(st.integers(min_value=0, max_value=30)))
def test_restart_at_any_event_index_changes_nothing(
    specs: list[tuple[str, str, int, int, bool]], restarts: set[int], tmp_path_factory: Any
) -> None:
    """Stopping and restarting (state through JSON) between any events yields the same firings."""
    events = _events_of(specs, "p")
    case = {"automations": _PROPERTY_AUTOMATIONS, "events": events, "until": "30m"}
    tmp_path = tmp_path_factory.mktemp("property")
    assert _run(case, tmp_path, restarts) == _run(case, tmp_path)


_STATELESS_AUTOMATIONS: list[dict[str, Any]] = [
    {  # the shape of "a run failed": Reactive, threshold 1, within 0, for_each
        "name": "failed",
        "trigger": {
            "type": "event",
            "expect": ["flow-run.Failed"],
            "match": {"resource.id": "flow-run.*"},
            "for_each": ["resource.id"],
            "within": 0,
        },
    },
    {  # no for_each, but resolvable: still nothing to wait for
        "name": "any-completed",
        "trigger": {"type": "event", "expect": ["flow-run.Completed"], "within": 0},
        "actions_on_resolve": [{"type": "notify", "channel": "c"}],
    },
    {  # resolvable with for_each: keeps a bucket (fired) and takes the general path
        "name": "failed-resolves",
        "trigger": {
            "type": "event",
            "expect": ["flow-run.Failed"],
            "for_each": ["resource.id"],
            "within": 0,
        },
        "actions_on_resolve": [{"type": "notify", "channel": "c"}],
    },
    {  # two triggers in one automation, one of them stateless
        "name": "compound",
        "trigger": {
            "type": "compound",
            "require": "any",
            "triggers": [
                {"type": "event", "expect": ["flow-run.Running"], "within": 0},
                {"type": "event", "expect": ["flow-run.heartbeat"], "threshold": 2, "within": 60},
            ],
        },
    },
]


@settings(max_examples=60, deadline=None)
@given(specs=_event_specs)
def test_stateless_triggers_fire_as_the_bucket_path_does(
    specs: list[tuple[str, str, int, int, bool]], tmp_path_factory: Any
) -> None:
    """The shortcut for Reactive/threshold 1/within 0 triggers (no bucket kept) gives the
    same firings as the general bucket arithmetic it skips, redeliveries included."""
    events = _events_of(specs, "s")
    case = {"automations": _STATELESS_AUTOMATIONS, "events": events, "until": "30m"}
    tmp_path = tmp_path_factory.mktemp("stateless")
    shortcut = _run(case, tmp_path)
    evaluators = _load(tmp_path, case["automations"])
    for evaluator in evaluators:
        for node, _, _ in evaluator._events.values():
            object.__setattr__(node, "stateless", False)  # the general path only
    general = _run(case, tmp_path, evaluators=evaluators)
    assert shortcut == general
    assert len(shortcut) >= sum(1 for name, *_ in specs if name == "flow-run.Failed")
