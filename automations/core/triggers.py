"""Trigger evaluation: (event or time, state) → firings and the state changes. No I/O.

:class:`TriggerEvaluator` is built once per :class:`~automations.spec.Automation`.
Its state (:class:`State`) maps a key — :func:`state_key` of (trigger path, bucket
key) — to a :class:`Bucket` (one event trigger's window for one ``for_each`` key)
or a :class:`Composite` (child firings of a compound/sequence trigger); a store
persists those rows under (automation name, key). Every call returns an
:class:`Outcome` with the firings and ``changes`` (key → new entry, ``None`` =
delete); ``outcome.state`` is the state after. Held ``follows`` events are the
engine-wide :mod:`automations.core.ordering` (re-exported here).

Clocks. Windows run on ``event.occurred``. ``on_event(event, now, …)`` takes the
arrival time (``event.received or event.occurred``) as ``now``: it stamps reactive
firings. ``on_time(now, …)`` takes the **lag-corrected event clock**,
:meth:`EventClock.as_of` — the newest ``occurred`` seen plus the wall time elapsed
since it was seen (Prefect's ``get_events_clock_offset``). Working off a backlog,
the wall clock barely moves between events, so the event clock stays at the
backlog's own time and no deadline passes early: no false "stale" alarm. A
Proactive firing's ``at`` is its deadline (the window's end, event time).

Prefect semantics mirrored (``prefect/server/events/triggers.py``):

* ``reactive_evaluation``: an ``after`` event opens a window at its ``occurred``
  (never replacing an open one); an opener that is also expected starts at count
  -1 (the heartbeat pattern); without ``after`` an expected event opens a window
  ``[occurred - 15m, occurred + within]``.
* ``evaluate``: an event older than the window is ignored; one inside is counted;
  Reactive fires when the count reaches ``threshold`` and the next window starts
  at ``max(end, occurred)`` (``within`` is a per-bucket cooldown), or nothing when
  ``after`` is set (the next ``after`` opens one) or ``within`` is 0; an event
  beyond the window counts in the next one. ``within: 0`` Reactive counts without
  a time limit until swept. Proactive fires when a window ends with fewer than
  ``threshold`` events, at its end; without ``after`` the next window follows.
* ``sweep_closed_buckets``: a Reactive window is dropped 60 s after its end.
* ``evaluate_composite_trigger``: a compound/sequence keeps the newest firing per
  child, drops those older than ``within``, and fires (clearing them) when
  ``require`` distinct children fired (``any``: at once) or, for a sequence, when
  all fired in order. Its ``event_ids`` list every child's events.
* Proactive triggers without ``after`` and ``for_each`` get a window at start
  (:meth:`TriggerEvaluator.on_start`, Prefect's ``proactive_evaluation``).

Where runbell differs, on purpose:

* Glob ``*`` matches the empty string (see :mod:`automations.core.matching`).
* A Proactive window that reaches ``threshold`` closes at once (Prefect deletes it
  at its next 5-second poll) and, when the satisfying event opens windows (a
  heartbeat) or there is no ``after``, a new window starts at that event. So "no
  completion within 10m" alarms 10m after the *last* completion, and a heartbeat
  restarts the window — Prefect alarms up to a window late or, with ``for_each``
  and no ``after``, never.
* #21932: when an expected event that does not open windows (a terminal state)
  closes a Proactive bucket, an event that is both ``after`` and ``expect`` (a
  heartbeat) occurring within ``within`` after it — or before it — does not reopen
  the bucket, so a heartbeat racing the final state is not a zombie.
* Deadlines fire at the deadline (a timer on :meth:`next_deadline`), not on a poll.
  An event for a Proactive bucket whose deadline already passed first settles that
  deadline (firing at the deadline, as ``on_time`` would have), then counts.
* A redelivered event id counts once in a window (Prefect relies on its consumer's
  seen-set). A firing has a deterministic :attr:`TriggerFiring.key`.
* Resolve (Prefect OSS never resolves), only for automations with
  ``actions_on_resolve``, top-level event triggers: Proactive — the first expected
  event for a bucket after it fired; Reactive with ``for_each`` — a later event
  (``occurred`` after the triggering one) for the same bucket that matches
  ``match``/``match_related`` but neither ``expect`` nor ``after`` (the run that
  Failed later Completes). Composite triggers never resolve.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, TypeAdapter

from automations.core import buckets as _buckets
from automations.core.buckets import Bucket, EventNode, Hit
from automations.core.firing import TriggerFiring, state_key
from automations.core.matching import compile_trigger
from automations.core.metrics import MetricEvaluator, MetricState, MetricWindow
from automations.core.ordering import (
    Admission,
    Held,
    OrderingState,
    admit,
    next_release,
    release,
)
from automations.spec import (
    Automation,
    CompoundTrigger,
    EventTrigger,
    MetricTrigger,
    SequenceTrigger,
    Trigger,
)
from events.model import Event

__all__ = [
    "Admission",
    "Bucket",
    "ChildFiring",
    "Composite",
    "EventClock",
    "Held",
    "OrderingState",
    "Outcome",
    "State",
    "TriggerEvaluator",
    "TriggerFiring",
    "admit",
    "next_release",
    "release",
    "state_key",
]


@dataclass(frozen=True, slots=True)
class ChildFiring:
    """One child trigger's latest firing, remembered by its composite parent."""

    child: int
    at: datetime
    event_ids: tuple[str, ...]
    bucket: dict[str, str]


@dataclass(frozen=True, slots=True)
class Composite:
    """A compound/sequence trigger's child firings, in the order they were recorded."""

    kind: Literal["composite"] = "composite"
    firings: tuple[ChildFiring, ...] = ()


Entry = Annotated[Bucket | Composite | MetricWindow, Field(discriminator="kind")]


@dataclass(frozen=True, slots=True)
class State:
    """One automation's trigger state: :func:`state_key` → entry. Plain JSON both ways."""

    entries: Mapping[str, Bucket | Composite | MetricWindow] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _STATE.dump_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> State:
        return _STATE.validate_json(raw)


_STATE = TypeAdapter(State)


@dataclass(frozen=True)
class Outcome:
    """Firings in order, and the changed entries (``None``: delete) over ``base``."""

    firings: tuple[TriggerFiring, ...]
    changes: Mapping[str, Bucket | Composite | MetricWindow | None]
    base: State

    @cached_property
    def state(self) -> State:
        if not self.changes:
            return self.base
        entries = dict(self.base.entries)
        for key, entry in self.changes.items():
            if entry is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
        return State(entries)


@dataclass(frozen=True, slots=True)
class EventClock:
    """Prefect's events clock: newest ``occurred`` (never past arrival) and when it was seen."""

    occurred: datetime | None = None
    seen_at: datetime | None = None

    def observe(self, event: Event, arrival: datetime) -> EventClock:
        return self.observed((event,), arrival)

    def observed(self, events: Iterable[Event], arrival: datetime) -> EventClock:
        """Moved on by ``events`` all seen at ``arrival`` (a batch: one new clock)."""
        newest = self.occurred
        for event in events:
            occurred = event.occurred if event.occurred < arrival else arrival
            if newest is None or occurred > newest:
                newest = occurred
        return EventClock(newest, arrival)

    def at(self, occurred: datetime, seen_at: datetime) -> EventClock:
        """Moved forward to ``occurred`` (a watermark seen at ``seen_at``); never back."""
        if self.occurred is not None and occurred <= self.occurred:
            return self
        return EventClock(min(occurred, seen_at), seen_at)

    def as_of(self, now: datetime) -> datetime:
        """Lag-corrected event time at wall time ``now``: the clock for ``on_time``."""
        if self.occurred is None or self.seen_at is None:
            return now
        return self.occurred + (now - self.seen_at)


@dataclass(frozen=True, slots=True)
class _CompositeNode:
    trigger: CompoundTrigger | SequenceTrigger
    parent: str | None

    @property
    def expected(self) -> int:
        if isinstance(self.trigger, CompoundTrigger):
            return self.trigger.expected_firings
        return len(self.trigger.triggers)


class _Changes:
    def __init__(self, base: State) -> None:
        self.base = base
        self.changes: dict[str, Bucket | Composite | MetricWindow | None] = {}
        self.firings: list[TriggerFiring] = []

    def get(self, key: str) -> Bucket | Composite | MetricWindow | None:
        if key in self.changes:
            return self.changes[key]
        return self.base.entries.get(key)

    def set(self, key: str, entry: Bucket | Composite | MetricWindow | None) -> None:
        if entry is None and key not in self.base.entries:
            self.changes.pop(key, None)
        elif entry is not self.base.entries.get(key) or key in self.changes:
            self.changes[key] = entry

    def outcome(self) -> Outcome:
        return Outcome(tuple(self.firings), self.changes, self.base)


class TriggerEvaluator:
    """Evaluates one automation's trigger tree. Immutable; safe to share."""

    def __init__(self, automation: Automation) -> None:
        self.name = automation.name
        self._events: dict[str, tuple[EventNode, str | None, int]] = {}
        self._composites: dict[str, tuple[_CompositeNode, int]] = {}
        self._metrics: dict[str, tuple[MetricEvaluator, str | None, int]] = {}
        self._resolvable = bool(automation.actions_on_resolve)
        for path, root in automation.roots():
            self._add(path, root, None, 0)
        # Only Proactive windows and metric triggers ever hold a deadline.
        self.has_deadlines = bool(self._metrics) or any(
            node.proactive for node, _, _ in self._events.values()
        )

    def _add(self, path: str, trigger: Trigger, parent: str | None, index: int) -> None:
        if isinstance(trigger, EventTrigger):
            node = EventNode(trigger, compile_trigger(trigger), self._resolvable and not parent)
            self._events[path] = (node, parent, index)
            return
        if isinstance(trigger, MetricTrigger):
            self._metrics[path] = (MetricEvaluator(self.name, path, trigger), parent, index)
            return
        self._composites[path] = (_CompositeNode(trigger, parent), index)
        for child, sub in enumerate(trigger.triggers):
            self._add(f"{path}.triggers[{child}]", sub, path, child)

    # -- public API ------------------------------------------------------------
    def on_event(self, event: Event, now: datetime, state: State) -> Outcome:
        """Evaluate ``event`` arriving at ``now`` (its ``received``, else ``occurred``)."""
        ctx = _Changes(state)
        for path, (node, _, _) in self._events.items():
            matcher = node.matcher
            if not matcher.covers_resources(event.resource, event.related):
                continue
            covered = matcher.covers_name(event.event)
            if not covered and not (node.resolvable and node.trigger.for_each):
                continue
            values = matcher.bucket_key(event)
            if node.stateless and not state.entries and not ctx.changes:
                # No bucket can exist (nothing is stored), and covered = expected (no
                # ``after``): the general path's answer, without its buckets.
                labels = dict(zip(matcher.for_each, values, strict=True))
                self._emit(ctx, path, _buckets.fires_at_once(event, now), labels)
                continue
            key = state_key(path, values)
            bucket = ctx.get(key)
            assert bucket is None or isinstance(bucket, Bucket)
            if not covered and (bucket is None or bucket.fired is None):
                continue
            step = _buckets.on_event(node, bucket, event, now)
            ctx.set(key, step.bucket)
            if step.hits:
                labels = dict(zip(matcher.for_each, values, strict=True))
                for hit in step.hits:
                    self._emit(ctx, path, hit, labels)
        for path, (metric, _, _) in self._metrics.items():
            if metric.covers(event):
                key = metric.key(event)  # the one window the event counts in
                window = state.entries.get(key)
                windows = MetricState({key: window} if isinstance(window, MetricWindow) else {})
                self._metric_step(ctx, path, metric.on_event(event, now, windows))
        return ctx.outcome()

    def on_time(self, now: datetime, state: State) -> Outcome:
        """Settle every deadline at or before ``now`` (the lag-corrected event clock)."""
        ctx = _Changes(state)
        self._start(ctx, now)
        due: list[tuple[datetime, str, str, list[str], Bucket]] = []
        for key, path, values, bucket in self._buckets(state):
            node = self._events[path][0]
            if bucket.deadline is not None and bucket.deadline <= now:
                due.append((bucket.deadline, key, path, values, bucket))
                continue
            ctx.set(key, _buckets.prune(node, _buckets.sweep(node, bucket, now), now))
        for _, key, path, values, bucket in sorted(due, key=lambda item: (item[0], item[1])):
            node = self._events[path][0]
            step = _buckets.expire(node, bucket, now)
            ctx.set(key, _buckets.prune(node, step.bucket, now))
            labels = dict(zip(node.matcher.for_each, values, strict=True))
            for hit in step.hits:
                self._emit(ctx, path, hit, labels)
        for path, (metric, _, _) in self._metrics.items():
            windows = self._windows(state, path)
            deadline = metric.next_deadline(windows)
            if deadline is not None and deadline <= now:
                self._metric_step(ctx, path, metric.on_time(now, windows))
        return ctx.outcome()

    def _windows(self, state: State, path: str) -> MetricState:
        # ``["<path>"`` prefixes exactly the keys of ``path``: a JSON string ends at its
        # first unescaped quote, so no other path's key starts with it. No parse per key.
        prefix = state_key(path)[:-1]
        return MetricState(
            {
                key: entry
                for key, entry in state.entries.items()
                if isinstance(entry, MetricWindow) and key.startswith(prefix)
            }
        )

    def _metric_step(self, ctx: _Changes, path: str, outcome: Any) -> None:
        for key, window in outcome.changes.items():
            ctx.set(key, window)
        _, parent, index = self._metrics[path]
        for firing in outcome.firings:
            if parent is None:
                ctx.firings.append(firing)
            elif firing.state == "triggered":
                child = ChildFiring(index, firing.at, firing.event_ids, firing.bucket)
                self._child_fired(ctx, parent, child)

    def on_start(self, now: datetime, state: State) -> Outcome:
        """Open the windows that exist without any event (run once when the automation loads)."""
        ctx = _Changes(state)
        self._start(ctx, now)
        return ctx.outcome()

    def next_deadline(self, state: State) -> datetime | None:
        """The earliest Proactive deadline (event time): when ``on_time`` is next owed."""
        # Called after every event that changed the state: test the deadline before
        # parsing the key, so Reactive buckets (never a deadline) cost no parse.
        deadlines = [
            entry.deadline
            for key, entry in state.entries.items()
            if isinstance(entry, Bucket)
            and entry.deadline is not None
            and orjson.loads(key)[0] in self._events
        ]
        for path, (metric, _, _) in self._metrics.items():
            deadline = metric.next_deadline(self._windows(state, path))
            if deadline is not None:
                deadlines.append(deadline)
        return min(deadlines, default=None)

    def advance(self, now: datetime, state: State) -> Outcome:
        """``on_time`` at every deadline up to ``now`` in turn, then at ``now``."""
        firings: list[TriggerFiring] = []
        current = state
        while (deadline := self.next_deadline(current)) is not None and deadline <= now:
            step = self.on_time(deadline, current)
            firings.extend(step.firings)
            current = step.state
        step = self.on_time(now, current)
        firings.extend(step.firings)
        current = step.state
        changes: dict[str, Bucket | Composite | MetricWindow | None] = {
            key: current.entries.get(key)
            for key in {*state.entries, *current.entries}
            if current.entries.get(key) is not state.entries.get(key)
        }
        return Outcome(tuple(firings), changes, state)

    # -- internals -------------------------------------------------------------
    def _buckets(self, state: State) -> Iterator[tuple[str, str, list[str], Bucket]]:
        """This evaluator's buckets: (key, trigger path, ``for_each`` values, bucket)."""
        for key, entry in state.entries.items():
            if isinstance(entry, Bucket):
                path, *values = orjson.loads(key)
                if path in self._events:
                    yield key, path, values, entry

    def _start(self, ctx: _Changes, now: datetime) -> None:
        for path, (node, _, _) in self._events.items():
            trigger = node.trigger
            if node.proactive and not trigger.after and not trigger.for_each:
                key = state_key(path)
                if ctx.get(key) is None:
                    ctx.set(key, node.window(now, now + trigger.within, 0))

    def _emit(self, ctx: _Changes, path: str, hit: Hit, labels: dict[str, str]) -> None:
        parent, index = self._parent(path)
        if parent is None:
            ctx.firings.append(
                TriggerFiring(self.name, path, hit.state, hit.at, labels, hit.event_ids)
            )
            return
        if hit.state == "triggered":
            self._child_fired(ctx, parent, ChildFiring(index, hit.at, hit.event_ids, labels))

    def _parent(self, path: str) -> tuple[str | None, int]:
        if path in self._metrics:
            _, parent, index = self._metrics[path]
            return parent, index
        if path in self._events:
            _, parent, index = self._events[path]
            return parent, index
        node, index = self._composites[path]
        return node.parent, index

    def _child_fired(self, ctx: _Changes, path: str, firing: ChildFiring) -> None:
        """Prefect's ``evaluate_composite_trigger``."""
        node, _ = self._composites[path]
        if node.expected == 1:
            hit = Hit("triggered", firing.at, firing.event_ids)
            self._emit(ctx, path, hit, firing.bucket)
            return
        key = state_key(path)
        entry = ctx.get(key)
        firings = list(entry.firings) if isinstance(entry, Composite) else []
        within = node.trigger.within
        if within is not None:
            firings = [f for f in firings if f.at >= firing.at - within]
        firings = [f for f in firings if f.child != firing.child] + [firing]
        if not self._ready(node, firings):
            ctx.set(key, Composite(firings=tuple(firings)))
            return
        ctx.set(key, None)
        ids = list(firing.event_ids)
        labels: dict[str, str] = {}
        for child in [firing, *sorted(firings, key=lambda f: f.child)]:
            ids.extend(i for i in child.event_ids if i not in ids)
            labels = {**child.bucket, **labels}
        self._emit(ctx, path, Hit("triggered", firing.at, tuple(ids)), labels)

    @staticmethod
    def _ready(node: _CompositeNode, firings: list[ChildFiring]) -> bool:
        if isinstance(node.trigger, CompoundTrigger):
            return len(firings) >= node.expected
        order = [f.child for f in sorted(firings, key=lambda f: f.at)]
        return order == list(range(node.expected))
