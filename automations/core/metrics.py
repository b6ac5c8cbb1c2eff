"""Metric triggers (Prefect Cloud's): state + decisions over flow-run state events. No I/O.

One :class:`MetricEvaluator` per ``type: metric`` trigger. Observations come from
flow-run state events whose resource and related resources match ``match`` /
``match_related`` (the event names are the metric's own, not configurable):

* ``successes``: each ``flow-run.Completed`` (1) / ``Failed`` / ``Crashed`` (0)
  in the range; the value is completed / (completed + failed + crashed).
  ``Cancelled`` runs do not count either way.
* ``duration``: seconds from a run's ``flow-run.Running`` to its terminal state
  (``Completed``/``Failed``/``Crashed``/``Cancelled``), for runs finishing in the
  range; the value is the mean. A run whose Running was never seen (or is older
  than :data:`RUN_MEMORY`) yields no duration.
* ``lateness``: seconds from a run's expected start to its ``flow-run.Running``,
  for runs starting in the range (mean; a run starting early counts 0). The
  expected start is, in order: the Running event's ``payload.expected_start_time``;
  else the run's ``flow-run.Scheduled`` event's
  ``payload.validated_state.state_details.scheduled_time`` or
  ``payload.scheduled_time``. Not the Scheduled event's ``state-timestamp`` label
  nor its ``occurred``: Prefect schedules runs ahead, so those say when the run was
  *created*, not when it was due. A run with no known expected start yields no
  lateness. Runs that never start at all produce no observation: pair the metric
  with a Proactive trigger ("Scheduled, no Running within 10m") for stalled workers.

No observation in the range means no value, and no value never breaches.

Evaluation runs on event time: at each event's ``occurred`` (never moving back: a
late event is counted at its own time but evaluated at the bucket's clock) and at
each change point passed to :meth:`on_time` (an observation leaving the range, a
``firing_for`` elapsing). Prefect's ``firing_for`` is "the duration for which the
metric query must breach **or resolve** continuously before the state is updated":
the trigger fires once the condition has held for ``firing_for`` — at that instant,
``since + firing_for`` — and resolves once it has *not* held for ``firing_for``, so
a flapping metric neither fires nor resolves on a single evaluation. A redelivered
event id counts once. State is per ``for_each`` bucket, plain JSON.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter

from automations.core.firing import TriggerFiring, state_key
from automations.core.matching import ResourceFilter, bucket_key
from automations.spec import MetricTrigger
from events.model import Event

__all__ = ["RUN_MEMORY", "MetricEvaluator", "MetricOutcome", "MetricState", "MetricWindow"]

RUN_MEMORY = timedelta(days=7)
"""How long a run's Running / Scheduled time is remembered while waiting for the next state."""

_MAX_EVENT_IDS = 50
_TERMINAL = frozenset({"Completed", "Failed", "Crashed", "Cancelled"})
_SUCCESS = {"Completed": 1.0, "Failed": 0.0, "Crashed": 0.0}
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample: when it happened (event time), its value, and the event that gave it."""

    at: datetime
    value: float
    event_id: str


@dataclass(frozen=True, slots=True)
class MetricWindow:
    """One metric bucket. ``firing``: the trigger is in its triggered state.

    ``since`` is when the condition started to disagree with ``firing`` (breaching
    while not firing, or clear while firing); ``None`` while they agree. ``clock`` is
    the event time of the last evaluation. ``starts``/``expected`` remember runs'
    Running and expected start times by resource id.
    """

    kind: Literal["metric"] = "metric"
    observations: tuple[Observation, ...] = ()
    starts: Mapping[str, datetime] = field(default_factory=dict)
    expected: Mapping[str, datetime] = field(default_factory=dict)
    firing: bool = False
    since: datetime | None = None
    clock: datetime | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.observations or self.starts or self.expected or self.firing or self.since)


@dataclass(frozen=True, slots=True)
class MetricState:
    """:func:`~automations.core.triggers.state_key` (path, bucket) → window. Plain JSON."""

    windows: Mapping[str, MetricWindow] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _STATE.dump_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> MetricState:
        return _STATE.validate_json(raw)


_STATE = TypeAdapter(MetricState)


@dataclass(frozen=True)
class MetricOutcome:
    """Firings in order and changed windows (``None``: delete) over ``base``."""

    firings: tuple[TriggerFiring, ...]
    changes: Mapping[str, MetricWindow | None]
    base: MetricState

    @cached_property
    def state(self) -> MetricState:
        windows = dict(self.base.windows)
        for key, window in self.changes.items():
            if window is None:
                windows.pop(key, None)
            else:
                windows[key] = window
        return MetricState(windows)


class MetricEvaluator:
    """Evaluates one metric trigger at ``path`` of automation ``automation``. Immutable."""

    def __init__(self, automation: str, path: str, trigger: MetricTrigger) -> None:
        self.automation = automation
        self.path = path
        self.trigger = trigger
        self.query = trigger.metric
        self._resources = ResourceFilter.of(trigger.match, trigger.match_related)
        self._for_each = tuple(sorted(set(trigger.for_each)))
        self._compare = _OPERATORS[self.query.operator]

    # -- public API ------------------------------------------------------------
    def covers(self, event: Event) -> bool:
        """A flow-run state event for a run this metric counts."""
        return event.event.startswith("flow-run.") and self._resources.covers(
            event.resource, event.related
        )

    def key(self, event: Event) -> str:
        """The :func:`~automations.core.triggers.state_key` of the window ``event`` counts in."""
        return state_key(self.path, bucket_key(self._for_each, event))

    def on_event(self, event: Event, now: datetime, state: MetricState) -> MetricOutcome:
        """Count ``event`` (arrived at ``now``) and evaluate its bucket at its event time."""
        if not self.covers(event):
            return MetricOutcome((), {}, state)
        values = bucket_key(self._for_each, event)
        key = state_key(self.path, values)
        labels = dict(zip(self._for_each, values, strict=True))
        occurred = min(event.occurred, now)
        window = state.windows.get(key) or MetricWindow()
        firings: list[TriggerFiring] = []
        at = occurred if window.clock is None else max(window.clock, occurred)
        window = self._advance(window, at, labels, firings)
        window = self._observe(window, event, occurred, at)
        window = self._evaluate(window, at, labels, firings)
        change = None if window.is_empty else window
        return MetricOutcome(tuple(firings), {key: change}, state)

    def on_time(self, now: datetime, state: MetricState) -> MetricOutcome:
        """Settle every change point at or before ``now`` (the lag-corrected event clock)."""
        firings: list[TriggerFiring] = []
        changes: dict[str, MetricWindow | None] = {}
        for key, window in sorted(state.windows.items()):
            if self._deadline(window) is None or window.clock is None or window.clock >= now:
                continue
            labels = dict(zip(self._for_each, orjson.loads(key)[1:], strict=True))
            after = self._evaluate(
                self._advance(window, now, labels, firings), now, labels, firings
            )
            changes[key] = None if after.is_empty else after
        return MetricOutcome(tuple(firings), changes, state)

    def next_deadline(self, state: MetricState) -> datetime | None:
        """The earliest change point (event time): when ``on_time`` is next owed."""
        return min(
            (d for w in state.windows.values() if (d := self._deadline(w)) is not None),
            default=None,
        )

    def value(self, window: MetricWindow) -> float | None:
        """The metric over the window's observations (``None``: no data)."""
        if not window.observations:
            return None
        return sum(o.value for o in window.observations) / len(window.observations)

    # -- internals -------------------------------------------------------------
    def _deadline(self, window: MetricWindow) -> datetime | None:
        points = []
        if window.observations:
            points.append(min(o.at for o in window.observations) + self.query.range)
        if window.since is not None:
            points.append(window.since + self.query.firing_for)
        for remembered in (window.starts, window.expected):
            if remembered:
                points.append(min(remembered.values()) + RUN_MEMORY)
        return min(points, default=None)

    def _advance(
        self,
        window: MetricWindow,
        until: datetime,
        labels: dict[str, str],
        out: list[TriggerFiring],
    ) -> MetricWindow:
        """Evaluate at every change point strictly after the clock and up to ``until``."""
        while window.clock is not None:
            point = self._deadline(window)
            if point is None or point > until or point <= window.clock:
                break
            window = self._evaluate(window, point, labels, out)
        return window

    def _evaluate(
        self,
        window: MetricWindow,
        at: datetime,
        labels: dict[str, str],
        out: list[TriggerFiring],
    ) -> MetricWindow:
        # Change points are evaluated in order, so when ``since + firing_for`` is
        # reached the condition held (or stayed clear) on all of [since, due): the
        # state flips at ``due`` whatever else happens at that instant.
        if window.since is not None:
            due = window.since + self.query.firing_for
            if at >= due:
                firing = not window.firing
                state: Literal["triggered", "resolved"] = "triggered" if firing else "resolved"
                ids = tuple(o.event_id for o in reversed(window.observations))[:_MAX_EVENT_IDS]
                out.append(TriggerFiring(self.automation, self.path, state, due, labels, ids))
                window = replace(window, firing=firing, since=None)
        horizon = at - self.query.range
        forget = at - RUN_MEMORY
        window = replace(
            window,
            observations=tuple(o for o in window.observations if o.at > horizon),
            starts={k: v for k, v in window.starts.items() if v > forget},
            expected={k: v for k, v in window.expected.items() if v > forget},
            clock=at,
        )
        value = self.value(window)
        holds = value is not None and self._compare(value, self.query.threshold)
        if holds == window.firing:
            return replace(window, since=None)
        return window if window.since is not None else replace(window, since=at)

    def _observe(
        self, window: MetricWindow, event: Event, occurred: datetime, at: datetime
    ) -> MetricWindow:
        event_id = event.id_text
        if any(o.event_id == event_id for o in window.observations):
            return window  # redelivered
        run = event.resource_id
        state = event.event.removeprefix("flow-run.")
        starts, expected = dict(window.starts), dict(window.expected)
        sample: float | None = None
        name = self.query.name
        if state == "Scheduled":
            due = _scheduled_time(event.payload)
            if due is not None:
                expected[run] = due
        elif state == "Running":
            starts[run] = occurred
            due = _datetime(event.payload.get("expected_start_time")) or expected.get(run)
            expected.pop(run, None)
            if name == "lateness" and due is not None:
                sample = max(0.0, (occurred - due).total_seconds())
        elif state in _TERMINAL:
            started = starts.pop(run, None)
            expected.pop(run, None)
            if name == "successes":
                sample = _SUCCESS.get(state)
            elif name == "duration" and started is not None:
                sample = max(0.0, (occurred - started).total_seconds())
        observations = window.observations
        if sample is not None and occurred > at - self.query.range:
            observations = (*observations, Observation(occurred, sample, event_id))
        return replace(window, observations=observations, starts=starts, expected=expected)


def _scheduled_time(payload: Mapping[str, Any]) -> datetime | None:
    validated = payload.get("validated_state")
    if isinstance(validated, dict):
        details = validated.get("state_details")
        if isinstance(details, dict):
            found = _datetime(details.get("scheduled_time"))
            if found is not None:
                return found
    return _datetime(payload.get("scheduled_time"))


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None
