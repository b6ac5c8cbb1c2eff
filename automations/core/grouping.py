"""Notification grouping with Alertmanager's semantics: (alerts, now, state) → digests. No I/O.

A ``notify`` action with ``group_by`` does not send one message per firing. Each
firing becomes an :class:`Alert` in an aggregation group keyed by (automation,
action index, the alert's values of the ``group_by`` labels), and a group is
flushed as one :class:`Digest`. Functions take ``now`` and a :class:`GroupingState`
and return decisions and the new state; the caller persists the state
(:meth:`GroupingState.to_json`) in the same transaction as the digests' outbox
rows, and wakes up at :func:`next_flush`.

Alertmanager semantics mirrored:

* ``dispatch/group.go`` (``aggrGroup``): a new group flushes ``group_wait`` after it
  is created — at once if an alert arrives whose ``at + group_wait`` is already past
  while the group never flushed — and then every ``group_interval`` while it has
  alerts. After a flush its resolved alerts are dropped and an empty group is
  removed (``dispatch.go``'s cleanup). An alert resolves when its state says so or
  its ``ends_at`` has passed (``Alert.ResolvedAt``).
* ``notify/dedup_stage.go`` (``needsUpdate`` against the notification log, here
  :class:`Notified`): a flush notifies on the group's first firing alerts, on
  firing alerts not in the last notification, when every alert resolved after a
  notification with firing alerts, on newly resolved alerts (``send_resolved``),
  or when ``repeat_interval`` passed since the last notification (strictly);
  otherwise it sends nothing. So the same set twice is one message.
* ``notify/notify.go`` (``RetryStage``): without ``send_resolved`` a digest leaves
  resolved alerts out, and an all-resolved flush is logged but sends nothing.
* Defaults ``30s`` / ``5m`` / ``4h`` (``dispatch/route.go``); ``group_by: ["..."]``
  groups by every label; a ``group_by`` label an alert lacks is not a group label.
* Identity is :attr:`Alert.id` (:func:`alert_id`: automation + bucket labels), like
  Alertmanager's label fingerprint: a later firing of the same bucket updates its
  alert; the same firing twice (or an older one) changes nothing.

Where runbell differs, on purpose: the notification is logged when the digest is
decided, not after delivery — the digest goes to the outbox in the same
transaction, and the outbox delivers it at least once under
:attr:`Digest.idempotency_key`. A late :func:`flush_due` flushes a group once, at
``now``; it does not replay the ticks it missed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter

__all__ = [
    "GROUP_BY_ALL",
    "Alert",
    "Digest",
    "Group",
    "GroupingPolicy",
    "GroupingState",
    "Notified",
    "add",
    "alert_id",
    "digest_context",
    "flush_due",
    "group_key",
    "next_flush",
]

GROUP_BY_ALL = "..."
Reason = Literal["first", "new-alerts", "new-resolved", "all-resolved", "repeat"]


@dataclass(frozen=True, slots=True)
class GroupingPolicy:
    """One notify action's grouping options (Alertmanager's route options)."""

    group_by: tuple[str, ...] = ()
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)
    send_resolved: bool = True

    def __post_init__(self) -> None:
        if self.group_wait < timedelta(0):
            raise ValueError("group_wait must not be negative; write 0 or e.g. '30s'")
        if self.group_interval <= timedelta(0) or self.repeat_interval <= timedelta(0):
            raise ValueError("group_interval and repeat_interval must be positive; e.g. '5m', '4h'")

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The alert's values of the ``group_by`` labels (all of them for ``...``)."""
        keys = labels.keys() if GROUP_BY_ALL in self.group_by else set(self.group_by)
        return {k: labels[k] for k in sorted(keys) if k in labels}


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing as seen by grouping; ``id`` is its identity across firings."""

    id: str
    labels: dict[str, str]
    state: Literal["firing", "resolved"]
    at: datetime
    firing_id: str
    summary: str = ""
    ends_at: datetime | None = None  # Alertmanager's EndsAt: resolved from then on

    def resolved_at(self, now: datetime) -> bool:
        return self.state == "resolved" or (self.ends_at is not None and self.ends_at <= now)


@dataclass(frozen=True, slots=True)
class Notified:
    """The group's last notification (Alertmanager's nflog entry): when, and which alert ids."""

    at: datetime
    firing: tuple[str, ...]
    resolved: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """One aggregation group: its alerts by id, its timer and its notification log."""

    automation: str
    action: int
    labels: dict[str, str]
    policy: GroupingPolicy
    alerts: dict[str, Alert]
    next_flush: datetime
    flushed: bool = False
    seq: int = 0  # digests sent so far
    notified: Notified | None = None


@dataclass(frozen=True, slots=True)
class GroupingState:
    """Every open group by :func:`group_key`. Plain JSON both ways."""

    groups: dict[str, Group] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _STATE.dump_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> GroupingState:
        return _STATE.validate_json(raw)


_STATE = TypeAdapter(GroupingState)


@dataclass(frozen=True, slots=True)
class Digest:
    """One notification about a group; ``idempotency_key`` is the same on every replay."""

    group_key: str
    automation: str
    action: int
    labels: dict[str, str]
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    reason: Reason
    at: datetime
    idempotency_key: str


def alert_id(automation: str, bucket: Mapping[str, str]) -> str:
    """An alert's identity: the automation and the firing's bucket labels."""
    return orjson.dumps([automation, dict(bucket)], option=orjson.OPT_SORT_KEYS).decode()


def group_key(automation: str, action: int, labels: Mapping[str, str]) -> str:
    """The aggregation group of (automation, action index, group labels)."""
    return orjson.dumps([automation, action, dict(labels)], option=orjson.OPT_SORT_KEYS).decode()


def add(
    state: GroupingState,
    policy: GroupingPolicy,
    alerts: Iterable[Alert],
    now: datetime,
    *,
    automation: str,
    action: int,
) -> GroupingState:
    """Put ``alerts`` (arriving at ``now``) into their groups; returns the new state.

    A resolved alert no group holds is dropped: nobody was told it fired.
    """
    groups = dict(state.groups)
    touched: dict[str, dict[str, Alert]] = {}
    for alert in alerts:
        labels = policy.group_labels(alert.labels)
        key = group_key(automation, action, labels)
        if alert.state == "resolved" and alert.id not in getattr(groups.get(key), "alerts", {}):
            # Identity, not labels, says which alert resolves: find the group holding it.
            mine = (
                k for k, g in groups.items() if g.action == action and g.automation == automation
            )
            key = next((k for k in mine if alert.id in groups[k].alerts), key)
        group = groups.get(key)
        current = group.alerts.get(alert.id) if group else None
        if current is None and alert.state == "resolved":
            continue
        if current is not None and (alert.at < current.at or alert.firing_id == current.firing_id):
            continue  # an older or redelivered firing
        if group is None:
            group = Group(automation, action, labels, policy, {}, now + policy.group_wait)
        if key not in touched:
            touched[key] = dict(group.alerts)
        touched[key][alert.id] = alert
        due = group.next_flush
        if not group.flushed and alert.at + policy.group_wait < now:
            due = min(due, now)  # its wait is already over: flush at once
        groups[key] = replace(group, policy=policy, alerts=touched[key], next_flush=due)
    return GroupingState(groups) if touched else state


def flush_due(state: GroupingState, now: datetime) -> tuple[list[Digest], GroupingState]:
    """Flush every group whose timer is due at ``now``: the digests to send, and the new state."""
    due = sorted((g.next_flush, k) for k, g in state.groups.items() if g.next_flush <= now)
    if not due:
        return [], state
    groups = dict(state.groups)
    digests: list[Digest] = []
    for _, key in due:
        digest, group = _flush(key, groups[key], now)
        if digest is not None:
            digests.append(digest)
        if group is None:
            del groups[key]
        else:
            groups[key] = group
    return digests, GroupingState(groups)


def next_flush(state: GroupingState) -> datetime | None:
    """When :func:`flush_due` is next owed (``None``: no open group)."""
    return min((g.next_flush for g in state.groups.values()), default=None)


def digest_context(digest: Digest) -> dict[str, Any]:
    """What a message template sees for a digest: JSON-shaped."""
    firing = [_alert_context(a) for a in digest.firing]
    resolved = [_alert_context(a) for a in digest.resolved]
    every = [*digest.firing, *digest.resolved]
    common = dict(every[0].labels) if every else {}
    for alert in every[1:]:
        common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
    return {
        "status": "firing" if firing else "resolved",
        "reason": digest.reason,
        "automation": digest.automation,
        "group_key": digest.group_key,
        "group_labels": dict(digest.labels),
        "common_labels": common,
        "alerts": firing + resolved,
        "firing": firing,
        "resolved": resolved,
        "counts": {
            "firing": len(firing),
            "resolved": len(resolved),
            "total": len(firing) + len(resolved),
        },
    }


def _alert_context(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "labels": dict(alert.labels),
        "state": alert.state,
        "at": alert.at.isoformat(),
        "firing_id": alert.firing_id,
        "summary": alert.summary,
    }


def _needs_update(
    last: Notified | None,
    firing: set[str],
    resolved: set[str],
    policy: GroupingPolicy,
    now: datetime,
) -> Reason | None:
    # Alertmanager's DedupStage.needsUpdate, question for question.
    if last is None:
        return "first" if firing else None
    if not firing <= set(last.firing):
        return "new-alerts" if last.firing else "first"
    if not firing:
        return "all-resolved" if last.firing else None
    if policy.send_resolved and not resolved <= set(last.resolved):
        return "new-resolved"
    if last.at < now - policy.repeat_interval:
        return "repeat"
    return None


def _flush(key: str, group: Group, now: datetime) -> tuple[Digest | None, Group | None]:
    ordered = sorted(group.alerts.values(), key=lambda a: (a.at, a.id))
    firing = tuple(a for a in ordered if not a.resolved_at(now))
    resolved = tuple(a for a in ordered if a.resolved_at(now))
    policy = group.policy
    ids = {a.id for a in firing}
    reason = _needs_update(group.notified, ids, {a.id for a in resolved}, policy, now)
    digest, notified, seq = None, group.notified, group.seq
    if reason is not None:
        notified = Notified(now, tuple(sorted(ids)), tuple(sorted(a.id for a in resolved)))
        if firing or policy.send_resolved:
            seq += 1
            shown = resolved if policy.send_resolved else ()
            digest = Digest(
                key,
                group.automation,
                group.action,
                dict(group.labels),
                firing,
                shown,
                reason,
                now,
                _idempotency_key(key, seq, now, firing, shown),
            )
    if not firing:
        return digest, None  # every alert resolved and is now dropped: the group is over
    remaining = {a.id: a for a in firing}
    after = now + policy.group_interval
    return digest, replace(
        group, alerts=remaining, next_flush=after, flushed=True, seq=seq, notified=notified
    )


def _idempotency_key(
    key: str, seq: int, now: datetime, firing: tuple[Alert, ...], resolved: tuple[Alert, ...]
) -> str:
    # Group key + sequence + contents: a replayed flush yields the same key, while a
    # group re-created after it ended (sequence restarting) never collides.
    content = [
        key,
        seq,
        now.isoformat(),
        [a.firing_id for a in firing],
        [a.firing_id for a in resolved],
    ]
    return "digest:" + hashlib.sha256(orjson.dumps(content)).hexdigest()[:40]
