"""The engine's in-memory half: trigger state, candidates, outcomes into firings and intents.

:class:`Evaluation` holds what the engine keeps between batches (each automation's
trigger entries, deadlines, held followers, the event clock, recent events,
cooldowns) and turns an event's trigger outcomes into firings and intents. It does
no I/O: :class:`automations.engine.Engine` (its subclass) reads and commits. Every
change made while a batch is evaluated can be undone (:meth:`Evaluation._undoable`),
so memory never runs ahead of the database.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from automations.core.silences import SilenceSet, firing_labels
from automations.core.triggers import (
    EventClock,
    Outcome,
    State,
    TriggerEvaluator,
    TriggerFiring,
)
from automations.engine.candidates import CandidateIndex
from automations.engine.firing_ids import firing_id_for
from automations.spec import Automation, Config, EventTrigger
from automations.spec.loop_guard import automation_resource
from automations.state import Firing, Intent
from automations.state import triggers as trigger_store
from automations.state.triggers import Pending
from events.model import Event

RECENT_EVENTS = 10_000
_ABSENT = object()  # undo marker: the key did not exist


class Evaluation:
    """The loaded automations' in-memory state and how an outcome changes it."""

    def __init__(self, config: Config) -> None:
        self.automations = {a.name: a for a in config.automations if a.enabled}
        self.evaluators = {name: TriggerEvaluator(a) for name, a in self.automations.items()}
        self.index = CandidateIndex(self.automations.values())
        self.silences = SilenceSet(config.silences)
        self._own = {name: automation_resource(name)["resource.id"] for name in self.automations}
        self._actions = {  # [actions, actions_on_resolve] as the outbox stores them
            name: tuple(
                [action.model_dump(mode="json") for action in actions]
                for actions in (a.actions, a.actions_on_resolve)
            )
            for name, a in self.automations.items()
        }
        # (automation, trigger path) → what a Proactive trigger expected, for its messages.
        self._expected = {
            (name, path): expected
            for name, a in self.automations.items()
            for path, expected in _proactive(a.roots())
        }
        self._last_triggered: dict[tuple[str, str], datetime] = {}  # for ``cooldown``
        self.paused: set[str] = set()
        # Each automation's entries, changed in place (no copy per event); the State
        # handed to an evaluator is a read-only view of them.
        self._entries: dict[str, dict[str, Any]] = {name: {} for name in self.automations}
        self._states: dict[str, State] = {
            name: State(entries) for name, entries in self._entries.items()
        }
        self._deadlines: dict[str, datetime] = {}
        self._held: dict[str, Any] = {}
        self._event_clock = EventClock()
        self._recent: OrderedDict[str, Event] = OrderedDict()
        self._undo: dict[tuple[str, str], Any] | None = None  # (name, key) → entry before

    @contextlib.contextmanager
    def _undoable(self) -> Iterator[None]:
        """Roll the in-memory state back if the batch's commit fails.

        Memory must never run ahead of the database: a batch that is not durable
        is delivered again and must meet the state it met the first time.
        """
        undo: dict[tuple[str, str], Any] = {}
        held, clock = self._held, self._event_clock
        cooldowns = dict(self._last_triggered)
        self._undo = undo
        try:
            yield
        except BaseException:
            for (name, key), entry in undo.items():
                if entry is _ABSENT:
                    self._entries[name].pop(key, None)
                else:
                    self._entries[name][key] = entry
            for name in {name for name, _ in undo}:
                self._refresh_deadline(name)
            self._held, self._event_clock = held, clock
            self._last_triggered = cooldowns
            raise
        finally:
            self._undo = None

    def _evaluate(
        self,
        event: Event,
        arrival: datetime,
        pending: Pending,
        firings: list[Firing],
        intents: list[Intent],
    ) -> None:
        own = event.event.startswith("automation.")
        kept = False
        for name in self.index.candidates(event):
            if own and event.resource_id == self._own[name]:
                continue  # never feed an automation its own automation.* events
            outcome = self.evaluators[name].on_event(event, arrival, self._states[name])
            if outcome.changes and not kept:
                # Only an event some trigger state now holds (a window's ids, a last
                # event, a child firing, a metric observation) can be named by a later
                # firing; this event's own firings get it directly. Nothing else is kept,
                # so memory and the garbage collector see only what is still owed.
                self._remember(event)
                kept = True
            self._apply(name, outcome, pending, firings, intents, event)

    def _apply(
        self,
        name: str,
        outcome: Outcome,
        pending: Pending,
        firings: list[Firing] | None = None,
        intents: list[Intent] | None = None,
        current: Event | None = None,
    ) -> None:
        """``current``: the event being evaluated (its firings name it first)."""
        if outcome.changes:
            entries = self._entries[name]
            for key, entry in outcome.changes.items():
                if self._undo is not None and (name, key) not in self._undo:
                    self._undo[(name, key)] = entries.get(key, _ABSENT)
                if entry is None:
                    entries.pop(key, None)
                else:
                    entries[key] = entry
            trigger_store.merge(pending, name, outcome.changes)
            self._refresh_deadline(name)
        if firings is None or intents is None:
            return
        automation = self.automations[name]
        for decided in outcome.firings:
            muted = self._muted(automation, decided, current)
            firing = self._firing(automation, decided, muted, current)
            firings.append(firing)
            if muted is not None:
                continue  # recorded, actions suppressed
            # The actions' JSON, dumped once per automation (read-only, shared by intents).
            actions = self._actions[name][decided.state == "resolved"]
            intents.extend(
                Intent(firing.id, name, index, action) for index, action in enumerate(actions)
            )

    def _muted(
        self, automation: Automation, decided: TriggerFiring, current: Event | None
    ) -> str | None:
        """Why this firing's actions are suppressed (paused, silence, cooldown), or None."""
        if automation.name in self.paused:
            return "paused"
        if self.silences:
            event = self._event(decided.event_ids[0], current) if decided.event_ids else None
            labels = firing_labels(automation.name, decided.bucket, event)
            silence = self.silences.match(labels, decided.at)
            if silence is not None:
                return f"silence:{silence.name}"
        if decided.state == "triggered" and automation.cooldown:
            mark = (automation.name, _bucket_key(decided.bucket))
            last = self._last_triggered.get(mark)
            if last is not None and decided.at - last < automation.cooldown:
                return "cooldown"
            self._last_triggered[mark] = decided.at
        return None

    def _refresh_deadline(self, name: str) -> None:
        evaluator = self.evaluators[name]
        deadline = evaluator.next_deadline(self._states[name]) if evaluator.has_deadlines else None
        if deadline is None:
            self._deadlines.pop(name, None)
        else:
            self._deadlines[name] = deadline

    def _track_held(self, held: Any, pending: Pending) -> None:
        if not held and not self._held:
            return  # the usual case: nobody waits for a leader
        for event_id in set(self._held) - set(held):
            pending.held_removed.add(event_id)
            pending.held_added.pop(event_id, None)
        for event_id in set(held) - set(self._held):
            pending.held_added[event_id] = held[event_id]
        self._held = dict(held)

    def _remember(self, event: Event) -> None:
        self._recent[event.id_text] = event
        if len(self._recent) > RECENT_EVENTS:
            self._recent.popitem(last=False)

    def _event(self, event_id: str, current: Event | None) -> Event | None:
        if current is not None and event_id == current.id_text:
            return current
        return self._recent.get(event_id)

    def _firing(
        self,
        automation: Automation,
        decided: TriggerFiring,
        muted: str | None,
        current: Event | None = None,
    ) -> Firing:
        found = (self._event(i, current) for i in decided.event_ids)
        events = [e.json_dict() for e in found if e is not None]
        context: dict[str, Any] = {
            "muted": muted,
            "automation": {"name": automation.name, "description": automation.description},
            "events": events,  # "event" (the first) is added when read back
            "trigger": decided.trigger,
        }
        if decided.state == "triggered":
            expected = self._expected.get((automation.name, decided.trigger))
            if expected is not None:
                context["expected"] = expected
        return Firing(
            id=firing_id_for(decided),
            automation=automation.name,
            state=decided.state,
            at=decided.at,
            bucket=decided.bucket,
            event_ids=list(decided.event_ids),
            silenced=muted is not None,
            context=context,
        )


def _proactive(roots: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, {"expect", "within_s"}) of every Proactive event trigger, children included."""
    for path, trigger in roots:
        if isinstance(trigger, EventTrigger) and trigger.posture == "Proactive":
            within = trigger.within.total_seconds()
            yield path, {"expect": list(trigger.expect), "within_s": within}
        children = getattr(trigger, "triggers", None) or []
        yield from _proactive((f"{path}.triggers[{i}]", t) for i, t in enumerate(children))


def _bucket_key(bucket: dict[str, str]) -> str:
    return "\x1e".join(f"{k}={v}" for k, v in sorted(bucket.items()))


__all__ = ["RECENT_EVENTS", "Evaluation"]
