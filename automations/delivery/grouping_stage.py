"""The dispatcher's grouping stage: grouped ``notify`` intents in, one digest per group out.

The I/O around the pure core in :mod:`automations.core.grouping`:

* **absorb** — a claimed outbox row whose notify has ``group_by`` becomes an
  :class:`~automations.core.grouping.Alert` and is ``add``-ed to its group in ONE
  transaction with the row turning ``grouped`` (terminal) and an attempt recorded
  with the reason ``grouped into <group key>`` (:meth:`StateStore.change_grouping`).
  A claimed batch is one transaction, and a grouped row takes no rate-limit token.
* **flush** — at :func:`~automations.core.grouping.next_flush` the dispatcher calls
  :meth:`NotifyGrouping.flush`: ``flush_due`` and, in the same transaction as the
  new state, one outbox row per digest whose id (the idempotency key the channel
  sees) is :attr:`Digest.idempotency_key`, with a firing of state ``digest`` whose
  context is :func:`~automations.core.grouping.digest_context`. A crash before that
  commit flushes again; after it, the outbox owes the digest exactly once.
* **deliver** — the normal dispatcher path (retries, rate limit, fallback, action
  events) sends the digest row; this stage only renders it. A digest template
  that fails or renders blank sends the default digest, and the attempt says so.

Alerts, as built here:

* identity :func:`~automations.core.grouping.alert_id` of (automation, bucket); a firing
  with an empty bucket (no ``for_each``) is identified by its event's
  ``resource.id`` instead, so 200 failed runs are 200 alerts while the same run
  failing twice counts once;
* labels: the event's resource labels, ``related:<role>:<label>`` (as silences see
  them), ``<role>`` = the first related resource's name for each role (so
  ``group_by: [deployment]`` works), ``event``, the bucket and ``automation``;
* summary: the firing's default one-line subject (what failed, where). ``subject``
  and ``body`` of a grouped notify are digest templates (context:
  :func:`~automations.core.grouping.digest_context`);
* a triggered firing whose automation has no grouped notify to the same channel in
  ``actions_on_resolve`` never gets a resolved firing, so its alert ends by itself
  at ``at + repeat_interval`` (Alertmanager's ``EndsAt``): groups do not grow
  forever. A resolved firing's grouped notify (from ``actions_on_resolve``)
  resolves the alert in the group of the automation's grouped notify to the same
  channel in ``actions``.

All time comes from the injected clock (the dispatcher passes ``now``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from automations.core.grouping import (
    Alert,
    GroupingPolicy,
    GroupingState,
    add,
    alert_id,
    digest_context,
    flush_due,
)
from automations.delivery.actions import Job, StoredAction, template_context
from automations.delivery.actions.notify import Rendered, with_fallback_note
from automations.spec import Automation, NotifyAction
from automations.state import (
    AttemptRow,
    Firing,
    GroupingChange,
    OutboxRow,
    Outcome,
    OwedDigest,
    StateStore,
)
from notifiers import (
    Message,
    Notifier,
    SendResult,
    TemplateError,
    default_message,
    render_field,
)

__all__ = [
    "DIGEST_STATE",
    "GroupingStage",
    "NotifyGrouping",
    "alert_labels",
    "render_digest",
    "render_digest_or_default",
]

log = structlog.get_logger("runbell.grouping")

DIGEST_STATE = "digest"  # the state of a digest's firing row
# How long the next flush time read from the database is trusted; this process's own
# writes refresh it at once, another dispatcher's (Kafka replicas) within this bound.
NEXT_FLUSH_TTL = 1.0
MAX_LISTED = 20  # alerts listed per section of a default digest body


class GroupingStage(Protocol):
    """What the dispatcher needs of notification grouping (issue 4 point 3).

    Claimed rows whose action the stage ``claims`` (a notify with ``group_by``) are not sent:
    ``absorb`` takes a whole claimed batch into its groups and records those rows
    ``grouped`` itself, in one transaction, before throttling (a grouped row takes
    no rate-limit token). The dispatcher's timer calls ``flush`` at
    ``next_flush``; it owes each digest as an outbox row whose firing has state
    ``digest``, and ``deliver`` renders and sends such a row on the normal path
    (retries, rate limit, fallback).
    """

    def claims(self, action: StoredAction, firing: Firing) -> bool: ...

    async def absorb(
        self, jobs: Sequence[tuple[OutboxRow, NotifyAction, Firing]], now: datetime
    ) -> int: ...

    async def flush(self, now: datetime) -> int: ...

    async def next_flush(self) -> datetime | None: ...

    async def deliver(self, job: Job) -> SendResult: ...


class NotifyGrouping:
    """Grouping for the dispatcher (its :class:`GroupingStage`), on the state database."""

    def __init__(
        self,
        state: StateStore,
        channels: Mapping[str, Notifier],
        automations: Iterable[Automation],
        *,
        ui_base_url: str | None = None,
        max_listed: int = MAX_LISTED,
    ) -> None:
        self.state = state
        self.channels = channels
        self.automations = {a.name: a for a in automations}
        self.ui_base_url = ui_base_url
        self.max_listed = max_listed
        self._lock = asyncio.Lock()  # one writer per process; the database serialises the rest
        self._next_flush: tuple[float, datetime | None] | None = None  # (read at, value)

    # -- the dispatcher's questions ------------------------------------------------
    def claims(self, action: StoredAction, firing: Firing) -> bool:
        """A grouped notify of a real firing (not a digest, not an invalid action)."""
        if not isinstance(action, NotifyAction) or not action.group_by:
            return False
        return firing.state != DIGEST_STATE

    async def next_flush(self) -> datetime | None:
        """When the next group is due; asked on every dispatcher pass, so the answer is
        kept for ``NEXT_FLUSH_TTL`` seconds unless this process changes the groups."""
        read_at = time.monotonic()
        if self._next_flush is None or read_at - self._next_flush[0] > NEXT_FLUSH_TTL:
            self._next_flush = (read_at, await self.state.next_group_flush())
        return self._next_flush[1]

    # -- absorb: intents into groups ---------------------------------------------------
    async def absorb(
        self, jobs: Sequence[tuple[OutboxRow, NotifyAction, Firing]], now: datetime
    ) -> int:
        """Add each job's alert to its group and mark its row ``grouped``, atomically."""
        batches: dict[
            tuple[str, int], tuple[GroupingPolicy, list[tuple[OutboxRow, str, Alert]]]
        ] = {}
        for row, action, firing in jobs:
            index, policy = self._target(row, firing, action)
            alert = self._alert(firing, policy, action)
            batches.setdefault((row.automation, index), (policy, []))[1].append(
                (row, action.channel, alert)
            )

        def change(state: GroupingState) -> GroupingChange:
            outcomes: list[Outcome] = []
            for (automation, index), (policy, pairs) in batches.items():
                state = add(
                    state,
                    policy,
                    [alert for _, _, alert in pairs],
                    now,
                    automation=automation,
                    action=index,
                )
                outcomes.extend(
                    self._grouped(row, channel, alert, state, index, now)
                    for row, channel, alert in pairs
                )
            return GroupingChange(state, grouped=outcomes)

        async with self._lock:
            self._next_flush = None
            try:
                await self.state.change_grouping(change, automations={a for a, _ in batches})
            finally:
                self._next_flush = None
        log.info("notifications_grouped", count=len(jobs), groups=len(batches))
        return len(jobs)

    def _target(
        self, row: OutboxRow, firing: Firing, action: NotifyAction
    ) -> tuple[int, GroupingPolicy]:
        """The (action index, policy) whose groups this row's alert goes to."""
        if firing.state == "resolved":
            # A resolve comes from actions_on_resolve; its alert lives in the group of
            # the grouped notify to the same channel in actions.
            found = self._grouped_notify(row.automation, action.channel, resolve=False)
            if found is not None:
                return found[0], _policy(found[1])
        return row.action_index, _policy(action)

    def _grouped_notify(
        self, automation: str, channel: str, *, resolve: bool
    ) -> tuple[int, NotifyAction] | None:
        spec = self.automations.get(automation)
        if spec is None:
            return None
        actions = spec.actions_on_resolve if resolve else spec.actions
        for index, action in enumerate(actions):
            if isinstance(action, NotifyAction) and action.group_by and action.channel == channel:
                return index, action
        return None

    def _alert(self, firing: Firing, policy: GroupingPolicy, action: NotifyAction) -> Alert:
        context = template_context(firing, self.ui_base_url)
        identity = dict(firing.bucket)
        if not identity:
            resource = (context.get("event") or {}).get("resource") or {}
            if resource.get("resource.id"):
                identity = {"resource.id": str(resource["resource.id"])}
        resolves = self._grouped_notify(firing.automation, action.channel, resolve=True)
        ends_at = None
        if firing.state != "resolved" and resolves is None:
            ends_at = firing.at + policy.repeat_interval
        return Alert(
            id=alert_id(firing.automation, identity),
            labels=alert_labels(firing),
            state="resolved" if firing.state == "resolved" else "firing",
            at=firing.at,
            firing_id=firing.id,
            summary=default_message(context).subject,
            ends_at=ends_at,
        )

    def _grouped(
        self,
        row: OutboxRow,
        channel_name: str,
        alert: Alert,
        state: GroupingState,
        action: int,
        now: datetime,
    ) -> Outcome:
        # The group of this very notify: one automation may group several notifies.
        held = next(
            (
                (key, group)
                for key, group in state.groups.items()
                if group.automation == row.automation
                and group.action == action
                and alert.id in group.alerts
            ),
            None,
        )
        if held is None:
            reason = "not grouped: no open group holds this alert (nothing was told it fired)"
        elif (kept := held[1].alerts[alert.id].firing_id) == alert.firing_id:
            reason = f"grouped into {held[0]}"
        else:
            reason = f"grouped into {held[0]} (counted once: the same alert as firing {kept})"
        channel = self.channels.get(channel_name)
        attempt = AttemptRow(
            outbox_id=row.id,
            attempt=row.attempts,
            at=now,
            ok=True,
            retryable=False,
            latency_ms=0.0,
            target=channel.target if channel is not None else "-",
            reason=reason[:2000],
            series=row.series,
        )
        return Outcome(attempt, "grouped", None, None)

    # -- flush: groups into digests -------------------------------------------------------
    async def flush(self, now: datetime) -> int:
        """Owe one digest per group due at ``now``; returns how many."""
        due = await self.next_flush()
        if due is None or due > now:
            return 0

        def change(state: GroupingState) -> GroupingChange:
            digests, after = flush_due(state, now)
            firings: list[Firing] = []
            owed: list[OwedDigest] = []
            for digest in digests:
                found = self._action(digest.automation, digest.action)
                if found is None:
                    log.error(
                        "digest_dropped",
                        automation=digest.automation,
                        action=digest.action,
                        reason="the automation or its grouped notify is no longer configured",
                    )
                    continue
                context = digest_context(digest)
                firings.append(
                    Firing(
                        id=digest.idempotency_key,
                        automation=digest.automation,
                        state=DIGEST_STATE,
                        at=now,
                        bucket=dict(digest.labels),
                        event_ids=[],
                        context={"digest": context},
                    )
                )
                owed.append(
                    OwedDigest(digest.idempotency_key, digest.automation, digest.action, found, now)
                )
            return GroupingChange(after, firings=firings, digests=owed)

        async with self._lock:
            try:
                done = await self.state.change_grouping(change, due_by=now)
            finally:
                self._next_flush = None
        if done.digests:
            log.info("digests_owed", count=len(done.digests))
        return len(done.digests)

    def _action(self, automation: str, index: int) -> dict[str, Any] | None:
        spec = self.automations.get(automation)
        if spec is None or index >= len(spec.actions):
            return None
        action = spec.actions[index]
        if not isinstance(action, NotifyAction) or not action.group_by:
            return None
        return action.model_dump(mode="json")

    # -- deliver: one digest row -----------------------------------------------------------
    async def deliver(self, job: Job) -> SendResult:
        """Render the digest in ``job`` and send it once (the dispatcher owns retries)."""
        action = job.action
        if not isinstance(action, NotifyAction):
            return SendResult.failed("-", "invalid notify action for a digest")
        channel = self.channels.get(action.channel)
        if channel is None:
            return SendResult.failed("-", f"unknown channel {action.channel!r}")
        context = job.firing.context.get("digest")
        if not isinstance(context, Mapping):
            return SendResult.failed(channel.target, "digest firing without a digest context")
        rendered = await asyncio.to_thread(
            render_digest_or_default, action, context, self.max_listed
        )
        result = await channel.send(rendered.message, idempotency_key=job.key)
        return with_fallback_note(result, rendered.template_failed)


def render_digest(
    action: NotifyAction, context: Mapping[str, Any], max_listed: int = MAX_LISTED
) -> Message:
    """The digest message: the action's templates over digest context, else the default.

    Blocking (templates run with a time limit): call it from a worker thread.
    Raises ``TemplateError``.
    """
    subject = _default_subject(context)
    if action.subject:
        subject = render_field(action.subject, context, where="subject")
    body = _default_body(context, max_listed)
    if action.body:
        body = render_field(action.body, context, where="body")
    return _digest_message(context, subject, body)


def render_digest_or_default(
    action: NotifyAction, context: Mapping[str, Any], max_listed: int = MAX_LISTED
) -> Rendered:
    """``render_digest``, or the default digest when a template fails or renders a blank
    subject or body (as a notify falls back to its default message). Blocking."""
    try:
        message = render_digest(action, context, max_listed)
    except TemplateError as exc:
        failed = str(exc)
    else:
        fields = (("subject", message.subject), ("body", message.body))
        blank = [name for name, text in fields if not text.strip()]
        if not blank:
            return Rendered(message)
        failed = f"{' and '.join(blank)} rendered empty"
    default = _digest_message(
        context, _default_subject(context), _default_body(context, max_listed)
    )
    return Rendered(default, failed)


def _digest_message(context: Mapping[str, Any], subject: str, body: str) -> Message:
    attributes = {"automation": str(context.get("automation", ""))}
    if context.get("status") == "resolved":
        attributes["resolved"] = "true"
    return Message(subject=subject, body=body, attributes=attributes)


def _default_subject(context: Mapping[str, Any]) -> str:
    counts = context.get("counts") or {}
    firing = context.get("status") != "resolved"
    status = f"[FIRING:{counts.get('firing', 0)}]" if firing else "[RESOLVED]"
    return " ".join(filter(None, [status, str(context.get("automation", "")), _pairs(context)]))


def _default_body(context: Mapping[str, Any], max_listed: int) -> str:
    counts = context.get("counts") or {}
    head = f"{counts.get('firing', 0)} firing, {counts.get('resolved', 0)} resolved"
    where = _pairs(context)
    lines = [f"{head} — {context.get('automation', '')}" + (f" ({where})" if where else "")]
    for title, key in (("Firing", "firing"), ("Resolved", "resolved")):
        alerts: Sequence[Mapping[str, Any]] = context.get(key) or []
        if not alerts:
            continue
        lines += ["", f"{title}:"]
        lines += [
            f"- {a.get('summary') or a.get('id')} (since {a.get('at')})"
            for a in alerts[:max_listed]
        ]
        if len(alerts) > max_listed:
            lines.append(f"- and {len(alerts) - max_listed} more")
    return "\n".join(lines)


def _pairs(context: Mapping[str, Any]) -> str:
    labels: Mapping[str, Any] = context.get("group_labels") or {}
    return " ".join(f"{key}={value}" for key, value in labels.items())


def alert_labels(firing: Firing) -> dict[str, str]:
    """What ``group_by`` picks from: event, resource, related (by role), bucket, automation."""
    event: Mapping[str, Any] = firing.context.get("event") or {}
    labels: dict[str, str] = {}
    if event.get("event"):
        labels["event"] = str(event["event"])
    labels.update({k: str(v) for k, v in (event.get("resource") or {}).items()})
    for related in reversed(event.get("related") or []):  # the first resource of a role wins
        if not isinstance(related, Mapping):
            continue
        role = str(related.get("resource.role", ""))
        labels.update({f"related:{role}:{k}": str(v) for k, v in related.items()})
        name = related.get("resource.name") or related.get("resource.id")
        if role and name:
            labels[role] = str(name)
    labels.update(firing.bucket)
    labels["automation"] = firing.automation
    return labels


def _policy(action: NotifyAction) -> GroupingPolicy:
    return GroupingPolicy(
        group_by=tuple(action.group_by or ()),
        group_wait=action.group_wait,
        group_interval=action.group_interval,
        repeat_interval=action.repeat_interval,
        send_resolved=action.send_resolved,
    )
