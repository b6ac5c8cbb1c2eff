"""The engine: consume event batches, evaluate triggers, record firings and intents.

The engine never talks to Slack or an orchestrator: it writes firings, action
intents and the changed trigger state to the database in ONE transaction with
the processed event ids, and only then returns, so the bus commits the batch
after the state is durable. A redelivered event id is skipped (it is in
``processed_events``), and a firing id is derived from the evaluation's
deterministic key, so replaying a batch can never produce a second firing.

Time. Windows run on event time. Proactive deadlines are settled by
:meth:`Engine.tick`, which the service calls from a timer armed at
:meth:`Engine.next_wakeup`; ``tick`` reads the lag-corrected event clock
(:class:`automations.core.triggers.EventClock`), so working off a backlog never makes
a deadline pass early.

Candidates come from an index on exact event names and exact resource ids (the
event's own and its related resources'), so K automations that each watch a
different deployment cost about what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from hashlib import sha1
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import structlog

from automations.core.silences import SilenceSet, firing_labels
from automations.core.triggers import (
    EventClock,
    OrderingState,
    Outcome,
    State,
    TriggerEvaluator,
    TriggerFiring,
    admit,
    next_release,
    release,
)
from automations.spec import (
    Automation,
    CompoundTrigger,
    Config,
    EventTrigger,
    MetricTrigger,
    SequenceTrigger,
)
from automations.spec.loop_guard import automation_resource
from automations.state import Firing, Intent, StateStore
from automations.state import triggers as trigger_store
from automations.state.engine import AlreadyProcessed
from automations.state.triggers import Pending
from events.clock import Clock
from events.model import Event

log = structlog.get_logger("runbell.engine")

CHECKPOINT = "engine"
_NS = uuid5(NAMESPACE_URL, "https://runbell.dev/firing")
_NS_BYTES = _NS.bytes
# The 80 bits after the time: the digest's, less the version nibble and the variant bits,
# which are set to version 8 (custom layout) and RFC 4122's variant.
_ID_KEEP = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)
_ID_SET = (0x8 << 76) | (0x2 << 62)
_RECENT_EVENTS = 10_000
_GLOB = set("*?![]")
_ABSENT = object()  # undo marker: the key did not exist
PAUSED_REFRESH = timedelta(seconds=1)


def firing_id_for(firing: TriggerFiring) -> str:
    """A UUID (version 8) that sorts by the firing's time: the first 48 bits are ``at``
    in Unix milliseconds (UUIDv7's layout), the rest is ``uuid5(_NS, firing.key)``.

    Deterministic like the key (``at`` is part of it), so a re-evaluated firing gets the
    same id. Time-ordered, so the firings, outbox and attempts indexes keyed by it grow
    at one end: with random ids each firing dirtied a page of each of them, and the
    SQLite latency p99 at 1,000 events/s crept from 30 to 52 ms over a minute as they
    grew (40 ms at the end with these ids; bench/README.md, "bench: latency").
    """
    digest = sha1(_NS_BYTES + firing.key.encode(), usedforsecurity=False).digest()
    value = (int(firing.at.timestamp() * 1000) << 80) | (
        int.from_bytes(digest[6:16], "big") & _ID_KEEP
    )
    x = "%032x" % (value | _ID_SET)
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class Engine:
    """Evaluates the loaded automations over event batches and timers."""

    def __init__(
        self,
        config: Config,
        state: StateStore,
        clock: Clock,
        *,
        on_intents: Callable[[Sequence[Firing]], None] | None = None,
        record: bool = False,
        ordered: bool = False,
        forward: Callable[[list[Event]], Awaitable[None]] | None = None,
    ) -> None:
        """``ordered``: the input was already put in ``follows`` order upstream (a shard
        fed by the router), so nothing is held here. ``forward``: the router's hook,
        handed every admitted event, in order, before the batch commits."""
        self.state = state
        self.ordered = ordered
        self.forward = forward
        self.clock = clock
        self.on_intents = on_intents
        self.record = record
        self.recorded: list[Firing] = []  # with ``record``: every firing committed, in order
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
        self._processed_recent: OrderedDict[str, None] = OrderedDict()
        self._undo: dict[tuple[str, str], Any] | None = None  # (name, key) → entry before
        self._paused_at: datetime | None = None
        self._paused_version = 0
        # handle() and tick() both move the in-memory state: one at a time.
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------
    async def load(self) -> None:
        """Restore trigger state, held followers and the event clock; open start windows."""
        mine = list(self.automations) if self.state.scope else None  # a shard's own
        loaded = await trigger_store.load(self.state.engine, self.state.scope, mine)
        for name, entries in loaded.states.items():
            if name in self._entries:
                self._entries[name].update(entries)
        self._held = dict(loaded.held)
        # Resume the event clock where it stopped: time the process was down is not
        # time the bus was quiet, so no deadline passes before the backlog is read.
        if loaded.clock.occurred is not None:
            self._event_clock = EventClock(loaded.clock.occurred, self.clock.now())
        self.paused = await self.state.paused()
        cooling = any(a.cooldown for a in self.automations.values())
        for firing in await self.state.firings(limit=1000) if cooling else []:
            if firing.state == "triggered" and not firing.silenced:
                mark = (firing.automation, _bucket_key(firing.bucket))
                self._last_triggered[mark] = max(
                    firing.at, self._last_triggered.get(mark, firing.at)
                )
        pending = Pending()
        now = self._event_clock.as_of(self.clock.now())
        for name, evaluator in self.evaluators.items():
            outcome = evaluator.on_start(now, self._states[name])
            self._apply(name, outcome, pending)
        for name in self.evaluators:
            self._refresh_deadline(name)
        if pending:
            await self.state.commit_batch(
                processed=[],
                firings=[],
                intents=[],
                now=self.clock.now(),
                checkpoint=None,
                extra=trigger_store.StateWrite(pending, self.state.scope),
            )

    def advance_clock(self, occurred: datetime) -> None:
        """Event time seen upstream (the router's watermark): deadlines never run ahead
        of a backlog this shard has not been handed yet."""
        self._event_clock = self._event_clock.at(occurred, self.clock.now())

    # -- events --------------------------------------------------------------------
    async def handle(self, events: list[Event]) -> None:
        """Process one batch; returns only once its outcome is durable."""
        async with self._lock:
            await self._handle(events)

    async def _handle(self, events: list[Event]) -> None:
        now = self.clock.now()
        version = self.state.paused_version
        if (
            self._paused_at is None
            or now - self._paused_at >= PAUSED_REFRESH
            or version != self._paused_version
        ):
            # pause-/resume-automation actions flip this in the database at any time.
            self.paused = await self.state.paused()
            self._paused_at, self._paused_version = now, version
        unique: dict[UUID, Event] = {}
        for event in events:
            unique.setdefault(event.id, event)
        batch = list(unique.values())
        seen_leaders = await self._seen_leaders(batch)
        if self.forward is not None:
            # A router must not forward a redelivery again: ask first, then evaluate.
            fresh_ids = await self.state.unprocessed([e.id for e in batch])
            fresh = [e for e in batch if e.id in fresh_ids]
            await self._run_batch(fresh, seen_leaders, require_fresh=False)
            return
        try:
            # Optimistic: evaluate as if every id were new and let the commit check
            # (one round trip less); a redelivery is the rare case that is redone.
            await self._run_batch(batch, seen_leaders, require_fresh=True)
        except AlreadyProcessed as redelivered:
            fresh = [e for e in batch if str(e.id) in redelivered.fresh]
            await self._run_batch(fresh, seen_leaders, require_fresh=False)

    async def _seen_leaders(self, batch: list[Event]) -> set[UUID]:
        """Leaders (``follows``) already processed: this process remembers recent ones."""
        leaders = {e.follows for e in batch if e.follows is not None}
        if self.ordered:
            return leaders  # ordered upstream: every leader has been handled
        unknown = [i for i in leaders if str(i) not in self._processed_recent]
        seen = leaders.difference(unknown)
        if unknown:
            seen |= set(unknown) - await self.state.unprocessed(unknown)
        return seen

    async def _run_batch(
        self, batch: list[Event], seen_leaders: set[UUID], *, require_fresh: bool
    ) -> None:
        pending = Pending()
        firings: list[Firing] = []
        intents: list[Intent] = []
        done: set[UUID] = set()
        admitted: list[Event] = []
        # The event clock is corrected for consumer lag: it advances with what this
        # process sees, when it sees it (the batch's arrival), not with ingestion stamps.
        seen_at = self.clock.now()
        with self._undoable():
            for event in batch:
                done.add(event.id)
                arrival = event.received or event.occurred
                leader = event.follows
                if leader is None and not self._held:
                    # The usual case: nothing to wait for, nobody waiting (what admit()
                    # decides too, without its bookkeeping).
                    ready_events: tuple[Event, ...] = (event,)
                else:
                    seen = (
                        {str(leader): arrival}
                        if leader is not None and (leader in seen_leaders or leader in done)
                        else {}
                    )
                    admission = admit(event, arrival, OrderingState(seen, self._held))
                    self._track_held(admission.state.held, pending)
                    ready_events = admission.ready
                for ready in ready_events:
                    self._evaluate(ready, ready.received or arrival, pending, firings, intents)
                if self.forward is not None:
                    admitted.extend(ready_events)
            if done:
                self._event_clock = self._event_clock.observed(batch, seen_at)
                pending.clock = self._event_clock
            if admitted and self.forward is not None:
                await self.forward(admitted)
            received = [e.received for e in batch if e.received is not None]
            await self._commit(
                processed=[e.id_text for e in batch],  # = done, formatted once
                pending=pending,
                firings=firings,
                intents=intents,
                checkpoint=(CHECKPOINT, max(received)) if received else None,
                require_fresh=require_fresh,
            )
        for event in batch:
            self._processed_recent[event.id_text] = None
        while len(self._processed_recent) > _RECENT_EVENTS:
            self._processed_recent.popitem(last=False)

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

    # -- time ----------------------------------------------------------------------
    def next_wakeup(self) -> datetime | None:
        """Wall time of the next deadline or held-event release (None: nothing pending)."""
        moments: list[datetime] = []
        if self._deadlines:
            deadline = min(self._deadlines.values())
            clock = self._event_clock
            if clock.occurred is not None and clock.seen_at is not None:
                deadline = deadline - clock.occurred + clock.seen_at
            moments.append(deadline)
        held_release = next_release(OrderingState({}, self._held))
        if held_release is not None:
            moments.append(held_release)
        return min(moments, default=None)

    async def tick(self) -> int:
        """Settle what is due at the clock's now; returns how many firings it made."""
        async with self._lock:
            with self._undoable():
                return await self._tick_now()

    async def _tick_now(self) -> int:
        wall = self.clock.now()
        pending = Pending()
        firings: list[Firing] = []
        intents: list[Intent] = []
        admission = release(wall, OrderingState({}, self._held))
        self._track_held(admission.state.held, pending)
        for event in admission.ready:
            self._evaluate(event, wall, pending, firings, intents)
        if admission.ready and self.forward is not None:
            await self.forward(list(admission.ready))
        event_now = self._event_clock.as_of(wall)
        for name, deadline in list(self._deadlines.items()):
            if deadline <= event_now:
                outcome = self.evaluators[name].advance(event_now, self._states[name])
                self._apply(name, outcome, pending, firings, intents)
        if pending or firings:
            await self._commit(
                processed=[e.id for e in admission.ready],
                pending=pending,
                firings=firings,
                intents=intents,
                checkpoint=None,
            )
        return len(firings)

    # -- internals -----------------------------------------------------------------
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
        if len(self._recent) > _RECENT_EVENTS:
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
        return Firing(
            id=firing_id_for(decided),
            automation=automation.name,
            state=decided.state,
            at=decided.at,
            bucket=decided.bucket,
            event_ids=list(decided.event_ids),
            silenced=muted is not None,
            context={
                "muted": muted,
                "automation": {"name": automation.name, "description": automation.description},
                "events": events,  # "event" (the first) is added when read back
                "trigger": decided.trigger,
            },
        )

    async def _commit(
        self,
        *,
        processed: Iterable[UUID | str],
        pending: Pending,
        firings: Sequence[Firing],
        intents: Sequence[Intent],
        checkpoint: tuple[str, datetime] | None,
        require_fresh: bool = False,
    ) -> None:
        await self.state.commit_batch(
            processed=processed,
            firings=firings,
            intents=intents,
            now=self.clock.now(),
            checkpoint=checkpoint,
            extra=trigger_store.StateWrite(pending, self.state.scope) if pending else None,
            require_fresh=require_fresh,
        )
        if self.record:
            self.recorded.extend(firings)
        logger = log.bind() if firings else log  # the configuration read once per batch
        for firing in firings:
            logger.info(
                "automation_fired",
                automation=firing.automation,
                state=firing.state,
                firing=firing.id,
                bucket=firing.bucket,
                triggering_event=firing.event_ids[0] if firing.event_ids else None,
            )
        if intents and self.on_intents is not None:
            self.on_intents(firings)  # the dispatcher keeps them: its claim need not re-read them


class CandidateIndex:
    """Which automations can care about an event, from exact names and resource ids.

    An automation is indexed by name when every event trigger in it lists only
    exact names in ``expect``/``after``; within a name, by resource id when every
    event trigger pins ``resource.id`` exactly in ``match`` or in a ``match_related``
    entry. Anything else (globs, negation, empty ``expect``, a resolvable
    ``for_each`` trigger that must see every event of its bucket) is checked for
    every event.
    """

    def __init__(self, automations: Iterable[Automation]) -> None:
        self._by_name: dict[str, tuple[dict[str, list[str]], list[str]]] = {}
        self._always: list[str] = []
        for automation in automations:
            roots = [trigger for _, trigger in automation.roots()]
            nodes = [node for root in roots for node in _event_triggers(root)]
            names = _exact_names(nodes)
            if (
                names is None
                or any(_has_metric(root) for root in roots)
                or (automation.actions_on_resolve and any(n.for_each for n in nodes))
            ):
                self._always.append(automation.name)
                continue
            ids = _exact_ids(nodes)
            for name in names:
                by_id, unindexed = self._by_name.setdefault(name, ({}, []))
                if ids is None:
                    unindexed.append(automation.name)
                else:
                    for resource_id in ids:
                        by_id.setdefault(resource_id, []).append(automation.name)

    def candidates(self, event: Event) -> list[str]:
        found = list(self._always)
        entry = self._by_name.get(event.event)
        if entry is None:
            return found
        by_id, unindexed = entry
        found.extend(unindexed)
        if by_id:
            seen: set[str] = set()
            for resource_id in (event.resource_id, *(r["resource.id"] for r in event.related)):
                for name in by_id.get(resource_id, ()):
                    if name not in seen:
                        seen.add(name)
                        found.append(name)
        return found


def _event_triggers(trigger: Any) -> Iterable[EventTrigger]:
    if isinstance(trigger, EventTrigger):
        yield trigger
    elif isinstance(trigger, CompoundTrigger | SequenceTrigger):
        for child in trigger.triggers:
            yield from _event_triggers(child)


def _has_metric(trigger: Any) -> bool:
    if isinstance(trigger, MetricTrigger):
        return True
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        return any(_has_metric(child) for child in trigger.triggers)
    return False


def _bucket_key(bucket: dict[str, str]) -> str:
    return "\x1e".join(f"{k}={v}" for k, v in sorted(bucket.items()))


def _exact(value: str) -> bool:
    return not (_GLOB & set(value))


def _exact_names(nodes: list[EventTrigger]) -> set[str] | None:
    names: set[str] = set()
    for node in nodes:
        patterns = [*node.expect, *node.after]
        if not node.expect or not all(_exact(p) for p in patterns):
            return None
        names.update(patterns)
    return names


def _exact_ids(nodes: list[EventTrigger]) -> set[str] | None:
    ids: set[str] = set()
    for node in nodes:
        pinned = [node.match.get("resource.id")] + [
            spec.get("resource.id") for spec in node.match_related
        ]
        choice = next((p for p in pinned if p and all(_exact(v) for v in p)), None)
        if choice is None:
            return None
        ids.update(choice)
    return ids


__all__ = ["CHECKPOINT", "CandidateIndex", "Engine", "firing_id_for"]
