"""Causal ordering of ``follows`` (Prefect's ``CausalOrdering``), as pure state + decisions.

An event that ``follows`` a leader not yet processed is held; it is released right
after its leader is processed, or as a "lost follower" once it has waited
``PRECEDING_EVENT_LOOKBACK`` (``ordering/memory.py``: ``wait_for_leader``,
``preceding_event_confirmed``, ``get_lost_followers``). Ordering is engine-wide, not
per automation: the engine admits each event here first, then evaluates the events
this returns, in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from events.model import Event

PRECEDING_EVENT_LOOKBACK = timedelta(minutes=15)
MAX_DEPTH_OF_PRECEDING_EVENT = 20


@dataclass(frozen=True, slots=True)
class Held:
    """A follower waiting for ``follows``; ``event`` is the event's JSON."""

    follows: str
    arrival: datetime
    event: str


@dataclass(frozen=True, slots=True)
class OrderingState:
    """Ids processed in the look-back (id → arrival) and the held followers (id → Held)."""

    seen: Mapping[str, datetime] = field(default_factory=dict)
    held: Mapping[str, Held] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Admission:
    """``ready``: evaluate these now, in order. ``held``: the admitted event waits."""

    ready: tuple[Event, ...]
    held: bool
    state: OrderingState


def admit(event: Event, now: datetime, state: OrderingState) -> Admission:
    """Admit ``event`` arriving at ``now``: hold it, or return it plus the followers it frees."""
    seen, held = dict(state.seen), dict(state.held)
    event_id = event.id_text
    leader = str(event.follows) if event.follows is not None else None
    arrival = event.received or now
    if (
        leader is not None
        and leader != event_id
        and now - arrival < PRECEDING_EVENT_LOOKBACK
        and leader not in seen
    ):
        held[event_id] = Held(leader, arrival, event.model_dump_json())
        return Admission((), True, OrderingState(seen, held))
    ready = _process([event], now, seen, held)
    return Admission(tuple(ready), False, OrderingState(seen, held))


def release(now: datetime, state: OrderingState) -> Admission:
    """Lost followers (held ``PRECEDING_EVENT_LOOKBACK``) go now; old seen ids are forgotten."""
    seen = {i: t for i, t in state.seen.items() if now - t < PRECEDING_EVENT_LOOKBACK}
    held = dict(state.held)
    lost = [i for i, h in held.items() if h.arrival + PRECEDING_EVENT_LOOKBACK <= now]
    events = sorted(
        (Event.model_validate_json(held.pop(i).event) for i in lost), key=lambda e: e.occurred
    )
    ready = _process(events, now, seen, held)
    return Admission(tuple(ready), False, OrderingState(seen, held))


def next_release(state: OrderingState) -> datetime | None:
    """When the oldest held follower is given up on as lost."""
    return min((h.arrival + PRECEDING_EVENT_LOOKBACK for h in state.held.values()), default=None)


def _process(
    events: list[Event], now: datetime, seen: dict[str, datetime], held: dict[str, Held]
) -> list[Event]:
    out: list[Event] = []
    queue = [(event, 0) for event in events]
    while queue:
        event, depth = queue.pop(0)
        out.append(event)
        seen[event.id_text] = now
        if depth >= MAX_DEPTH_OF_PRECEDING_EVENT:
            continue
        waiting = [i for i, h in held.items() if h.follows == event.id_text]
        followers = sorted(
            (Event.model_validate_json(held.pop(i).event) for i in waiting),
            key=lambda e: e.occurred,
        )
        queue[:0] = [(follower, depth + 1) for follower in followers]
    return out
