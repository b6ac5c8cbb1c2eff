"""One event trigger's bucket arithmetic: Prefect's ``reactive_evaluation``/``evaluate``.

Pure functions over one :class:`Bucket` (one ``for_each`` key). Line references are
to ``prefect/server/events/triggers.py``; the runbell differences are listed in
:mod:`automations.core.triggers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from automations.core.matching import CompiledTrigger
from automations.spec import EventTrigger
from events.model import Event

PRECEDING_EVENT_LOOKBACK = timedelta(minutes=15)
"""Prefect's ``PRECEDING_EVENT_LOOKBACK``: how far a first window reaches back."""
EXPIRED_BUCKET_BUFFER = timedelta(seconds=60)
"""Prefect's ``PREFECT_EVENTS_EXPIRED_BUCKET_BUFFER``: a reactive window's sweep delay."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """The state of one (automation, trigger path, ``for_each`` key). JSON-serialisable.

    ``start``/``end`` is the open window (both ``None`` when there is none); ``count``
    the expected events spent in it (``-1`` while a heartbeat opener is pending, as in
    Prefect); ``event_ids`` the ids counted in it, oldest first (redelivery dedup and
    the firing's events); ``deadline`` is ``end`` for a Proactive window (what a store
    indexes to arm the timer); ``fired`` is set while a firing awaits its resolve;
    ``closed`` is when a terminal event closed a Proactive bucket (heartbeat grace).
    """

    kind: Literal["bucket"] = "bucket"
    start: datetime | None = None
    end: datetime | None = None
    count: int = 0
    event_ids: tuple[str, ...] = ()
    last_event: str | None = None
    deadline: datetime | None = None
    fired: datetime | None = None
    closed: datetime | None = None

    @property
    def is_empty(self) -> bool:
        return self.start is None and self.fired is None and self.closed is None


@dataclass(frozen=True, slots=True)
class Hit:
    """A bucket decision: fire ``state`` at ``at`` with ``event_ids`` (triggering first)."""

    state: Literal["triggered", "resolved"]
    at: datetime
    event_ids: tuple[str, ...]


@dataclass(slots=True)
class Step:
    bucket: Bucket | None
    hits: list[Hit] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EventNode:
    """A compiled event trigger and whether its firings can resolve."""

    trigger: EventTrigger
    matcher: CompiledTrigger
    resolvable: bool
    # Derived from ``trigger`` once (asked for on every event):
    proactive: bool = field(init=False)
    immediate: bool = field(init=False)  # Reactive, ``within: 0``
    # Reactive, ``within: 0``, ``threshold: 1``, no ``after``, no resolve to wait for: an
    # expected event fires at once and leaves no bucket behind (see ``fires_at_once``).
    stateless: bool = field(init=False)

    def __post_init__(self) -> None:
        trigger = self.trigger
        proactive = trigger.posture == "Proactive"
        immediate = not proactive and trigger.within == timedelta(0)
        object.__setattr__(self, "proactive", proactive)
        object.__setattr__(self, "immediate", immediate)
        object.__setattr__(
            self,
            "stateless",
            immediate
            and trigger.threshold == 1
            and not trigger.after
            and not (self.resolvable and trigger.for_each),
        )

    def window(
        self,
        start: datetime,
        end: datetime,
        count: int,
        ids: tuple[str, ...] = (),
        *,
        last_event: str | None = None,
        fired: datetime | None = None,
    ) -> Bucket:
        """An open window (``last_event`` defaults to the newest of ``ids``)."""
        return Bucket(
            start=start,
            end=end,
            count=count,
            event_ids=ids,
            last_event=last_event or (ids[-1] if ids else None),
            deadline=end if self.proactive else None,
            fired=fired,
        )


def _no_window(bucket: Bucket) -> Bucket | None:
    out = replace(bucket, start=None, end=None, count=0, event_ids=(), deadline=None)
    return None if out.is_empty else out


def expire(node: EventNode, bucket: Bucket | None, now: datetime) -> Step:
    """Proactive evaluation of ``bucket`` as of ``now`` (Prefect's ``evaluate`` without event).

    A window ending at or before ``now`` with fewer than ``threshold`` events fires at
    its end; without ``after`` the next window starts at ``max(end, now)``.
    """
    step = Step(bucket)
    if bucket is None or bucket.end is None or bucket.start is None or bucket.end > now:
        return step
    trigger = node.trigger
    fired = bucket.fired
    if bucket.count < trigger.threshold:
        ids = (bucket.last_event,) if bucket.last_event else ()
        step.hits.append(Hit("triggered", bucket.end, ids))
        if node.resolvable:
            fired = bucket.end
    base = replace(bucket, fired=fired)
    if trigger.after:
        step.bucket = _no_window(base)
    else:
        start = max(bucket.end, now)
        step.bucket = node.window(
            start, start + trigger.within, 0, last_event=bucket.last_event, fired=fired
        )
    return step


def sweep(node: EventNode, bucket: Bucket | None, now: datetime) -> Bucket | None:
    """Prefect's ``sweep_closed_buckets``: a reactive window over for ``EXPIRED_BUCKET_BUFFER``."""
    if bucket is None or node.proactive or bucket.end is None:
        return bucket
    if bucket.end <= now - EXPIRED_BUCKET_BUFFER:
        return _no_window(bucket)
    return bucket


def prune(node: EventNode, bucket: Bucket | None, now: datetime) -> Bucket | None:
    """Drop a heartbeat-grace tombstone once the grace (``within``) has passed."""
    if bucket is None or bucket.closed is None or bucket.closed + node.trigger.within > now:
        return bucket
    out = replace(bucket, closed=None)
    return None if out.is_empty else out


def on_event(node: EventNode, bucket: Bucket | None, event: Event, arrival: datetime) -> Step:
    """Evaluate ``event`` (already known to match the labels) against one bucket."""
    trigger, matcher = node.trigger, node.matcher
    occurred, event_id = event.occurred, event.id_text
    if bucket is not None and event_id in bucket.event_ids:
        return Step(bucket)  # a redelivered id counts once
    starts = matcher.starts_after(event.event)
    expects = matcher.expects(event.event)
    hits: list[Hit] = []
    if node.proactive:
        step = expire(node, bucket, occurred)
        bucket, hits = step.bucket, step.hits
    else:
        bucket = sweep(node, bucket, occurred)

    if bucket is not None and bucket.fired is not None and node.resolvable:
        resolved = _resolve(node, bucket, event, starts, expects, arrival)
        if resolved is not None:
            hits.append(resolved)
            bucket = _clear_fired(bucket)
            if not node.proactive:
                return Step(bucket, hits)
            if not starts and bucket is not None and bucket.start is None:
                return Step(replace(bucket, closed=occurred), hits)

    # reactive_evaluation: ``after`` opens a window at ``occurred`` (ensure_bucket never
    # replaces an open one); an opener that is also expected starts at -1 (nebula#4201).
    if trigger.after and starts:
        if bucket is None or bucket.start is None:
            if node.proactive and expects and _in_grace(node, bucket, occurred):
                return Step(bucket, hits)  # #21932: heartbeat after the terminal state
            bucket = node.window(
                occurred,
                occurred + trigger.within,
                -1 if expects else 0,
                last_event=event_id,
                fired=bucket.fired if bucket else None,
            )
        else:
            bucket = replace(bucket, last_event=event_id)
    elif not trigger.after and expects:
        if bucket is None or bucket.start is None:
            # nebula#7230: reach back to absorb out-of-order siblings.
            bucket = node.window(
                occurred - PRECEDING_EVENT_LOOKBACK,
                occurred + trigger.within,
                0,
                last_event=event_id,
                fired=bucket.fired if bucket else None,
            )
        else:
            bucket = replace(bucket, last_event=event_id)
    if not expects or bucket is None or bucket.start is None:
        return Step(bucket, hits)
    step = _evaluate(node, bucket, event, arrival)
    step.hits[:0] = hits
    return step


def fires_at_once(event: Event, arrival: datetime) -> Hit:
    """:func:`on_event` of a ``stateless`` node, with no bucket, for an expected event.

    What the general path does, step by step: no ``after``, so the expected event opens a
    window reaching back ``PRECEDING_EVENT_LOOKBACK`` (``occurred`` is inside it); the
    event is counted (1 = ``threshold``), fires at ``arrival`` with just its own id, and
    ``within: 0`` with no resolve owed drops the bucket. The most common trigger ("a run
    failed") skips three Bucket and two Step constructions per event this way.
    """
    return Hit("triggered", arrival, (event.id_text,))


def _evaluate(node: EventNode, bucket: Bucket, event: Event, arrival: datetime) -> Step:
    """Prefect's ``evaluate`` with a triggering event; ``bucket`` has an open window."""
    trigger = node.trigger
    now, event_id = event.occurred, event.id_text
    start, end = bucket.start, bucket.end
    assert start is not None
    assert end is not None
    if now < start:
        return Step(bucket)  # case 1: older than the open window
    count = 1
    if node.immediate or start <= now < end:
        bucket = Bucket(  # replace(count + 1, event_ids + (id,), last_event=id), spelled out
            start=start,
            end=end,
            count=bucket.count + 1,
            event_ids=(*bucket.event_ids, event_id),
            last_event=event_id,
            deadline=bucket.deadline,
            fired=bucket.fired,
            closed=bucket.closed,
        )
        count = 0
    if node.proactive:
        return _proactive_spent(node, bucket, event) if count == 0 else Step(bucket)
    if bucket.count >= trigger.threshold:
        ids = bucket.event_ids  # the triggering event first
        ids = ids if ids == (event_id,) else (event_id, *[i for i in ids if i != event_id])
        hit = Hit("triggered", arrival, ids)
        fired = now if node.resolvable and trigger.for_each else None
        if trigger.after or trigger.within == timedelta(0):
            return Step(None if fired is None else Bucket(fired=fired), [hit])
        start = max(end, now)
        return Step(node.window(start, start + trigger.within, 0, fired=fired), [hit])
    if now < end:
        return Step(bucket)  # case 2
    if trigger.after:
        return Step(_no_window(bucket))
    if trigger.within == timedelta(0):
        return Step(bucket)  # Prefect leaves a within-0 bucket counting (until swept)
    # case 4: an event beyond the window counts in the next one.
    start = max(end, now)
    nxt = node.window(start, start + trigger.within, 0, fired=bucket.fired)
    return _evaluate(node, nxt, event, arrival)


def _proactive_spent(node: EventNode, bucket: Bucket, event: Event) -> Step:
    """An expected event was counted in a Proactive window.

    Prefect deletes a satisfied bucket at its next poll (``remove_buckets_exceeding_threshold``).
    runbell closes it at once, and reopens it at the satisfying event when that event
    opens windows (heartbeat) or when there is no ``after`` — so "none within 10m"
    alarms 10m after the *last* event.
    """
    trigger = node.trigger
    if bucket.count < trigger.threshold:
        return Step(bucket)
    occurred, event_id = event.occurred, event.id_text
    if not trigger.after or node.matcher.starts_after(event.event):
        return Step(
            node.window(occurred, occurred + trigger.within, 0, (event_id,), fired=bucket.fired)
        )
    return Step(replace(_no_window(bucket) or Bucket(), closed=occurred))


def _in_grace(node: EventNode, bucket: Bucket | None, occurred: datetime) -> bool:
    return (
        bucket is not None
        and bucket.closed is not None
        and occurred < bucket.closed + node.trigger.within
    )


def _clear_fired(bucket: Bucket) -> Bucket | None:
    out = replace(bucket, fired=None)
    return None if out.is_empty else out


def _resolve(
    node: EventNode, bucket: Bucket, event: Event, starts: bool, expects: bool, arrival: datetime
) -> Hit | None:
    """Does ``event`` clear ``bucket``'s firing? (runbell's ``actions_on_resolve`` rule)."""
    assert bucket.fired is not None
    ok = expects if node.proactive else not (expects or starts) and event.occurred > bucket.fired
    return Hit("resolved", arrival, (event.id_text,)) if ok else None
