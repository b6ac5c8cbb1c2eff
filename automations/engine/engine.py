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
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import structlog

from automations.core.triggers import EventClock, OrderingState, admit, next_release, release
from automations.engine.evaluation import RECENT_EVENTS, Evaluation, _bucket_key
from automations.spec import Config
from automations.state import Firing, Intent, StateStore
from automations.state import triggers as trigger_store
from automations.state.engine import AlreadyProcessed
from automations.state.triggers import Pending
from events.clock import Clock
from events.model import Event

log = structlog.get_logger("runbell.engine")

CHECKPOINT = "engine"
PAUSED_REFRESH = timedelta(seconds=1)


class Engine(Evaluation):
    """Evaluates the loaded automations over event batches and timers.

    The in-memory side (trigger state, outcomes into firings and intents) is
    :class:`~automations.engine.evaluation.Evaluation`; this class reads, commits
    and serialises batches and timers.
    """

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
        super().__init__(config)
        self._processed_recent: OrderedDict[str, None] = OrderedDict()
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
        while len(self._processed_recent) > RECENT_EVENTS:
            self._processed_recent.popitem(last=False)

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


__all__ = ["CHECKPOINT", "Engine"]
