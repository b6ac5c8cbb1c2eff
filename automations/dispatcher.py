"""The dispatcher: deliver what the outbox owes, record every attempt.

One stage owns backoff (here); notifiers never retry. An attempt is claimed
with a conditional update, so two dispatchers never send the same row at once;
an attempt interrupted by a crash is retried when its lease ends (at start-up
in the single-process embedded default). The outbox id is the idempotency key
the target receives, so a target that honours it sees one effect even then.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from automations.state import AttemptRow, Firing, OutboxRow, StateStore
from events.clock import Clock
from notifiers import Message, Notifier, SendResult, TemplateError, render

log = structlog.get_logger("runbell.dispatcher")

DEFAULT_SUBJECT = (
    "{{ event.event }}: {{ event.resource.get('resource.name') or event.resource['resource.id'] }}"
)
DEFAULT_BODY = (
    "{{ event.event }} on {{ event.resource['resource.id'] }}"
    "{% if event.resource.get('state-message') %}: {{ event.resource['state-message'] }}{% endif %}"
    " (automation {{ automation.name }}, at {{ event.occurred }})"
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=24)
    lease: timedelta = timedelta(seconds=60)

    def delay(self, attempt: int, retry_after: float | None) -> timedelta:
        """Exponential backoff with full jitter; ``Retry-After`` wins when larger."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        backoff = timedelta(seconds=random.uniform(cap.total_seconds() / 2, cap.total_seconds()))
        if retry_after is not None:
            backoff = max(backoff, timedelta(seconds=retry_after))
        return backoff


class Dispatcher:
    def __init__(
        self,
        state: StateStore,
        channels: Mapping[str, Notifier],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 32,
    ) -> None:
        self.state = state
        self.channels = channels
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()

    def wake(self) -> None:
        self._wake.set()

    async def progressed(self, timeout: float) -> None:
        """Wait (bounded) until the next attempt has been recorded."""
        async with self._progress:
            await asyncio.wait_for(self._progress.wait(), timeout)

    async def start(self, *, exclusive: bool) -> None:
        """Start the loop. ``exclusive``: this is the only dispatcher on the database,
        so attempts left 'sending' by a crash are owed now rather than after their lease."""
        if exclusive:
            await self.state.release_in_flight(self.clock.now())
        self._task = asyncio.create_task(self._run(), name="runbell-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                sent = await self.dispatch_due()
            except Exception as exc:  # keep delivering; the next pass retries
                log.error("dispatch_pass_failed", error=str(exc))
                sent = 0
            if sent:
                continue
            next_at = await self.state.next_due_at()
            timeout = None
            if next_at is not None:
                timeout = max(0.0, (next_at - self.clock.now()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def dispatch_due(self) -> int:
        """One pass over what is due now; returns how many rows were attempted."""
        rows = await self.state.due(self.clock.now())
        if rows:
            await asyncio.gather(*(self._attempt(row) for row in rows))
        return len(rows)

    async def _attempt(self, row: OutboxRow) -> None:
        async with self._limit:
            now = self.clock.now()
            attempt = row.attempts + 1
            if not await self.state.claim(row, attempt, now + self.policy.lease):
                return
            result = await self._send(row)
            self._log(row, attempt, result)
            status, next_at = self._next(row, attempt, result, now)
            await self.state.record_attempt(
                row.id,
                AttemptRow(
                    outbox_id=row.id,
                    attempt=attempt,
                    at=now,
                    ok=result.ok,
                    retryable=result.retryable,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    target=result.target,
                    reason=result.reason[:2000],
                ),
                status=status,
                next_attempt_at=next_at,
                error=None if result.ok else result.reason[:2000],
            )
            async with self._progress:
                self._progress.notify_all()

    def _next(
        self, row: OutboxRow, attempt: int, result: SendResult, now: datetime
    ) -> tuple[str, datetime | None]:
        if result.ok:
            return "sent", None
        too_old = now - row.created_at >= self.policy.max_age
        if not result.retryable or attempt >= self.policy.max_attempts or too_old:
            return "dead", None
        return "pending", now + self.policy.delay(attempt, result.retry_after)

    async def _send(self, row: OutboxRow) -> SendResult:
        action = row.action
        channel = self.channels.get(str(action.get("channel")))
        if channel is None:
            return _failure(f"unknown channel {action.get('channel')!r}", target="-")
        firing = await self.state.firing(row.firing_id)
        if firing is None:
            return _failure(f"firing {row.firing_id} is missing", target=channel.target)
        try:
            message = render_message(action, firing)
        except TemplateError as exc:
            return _failure(f"template: {exc}", target=channel.target)
        return await channel.send(message, idempotency_key=row.id)

    def _log(self, row: OutboxRow, attempt: int, result: SendResult) -> None:
        fields: dict[str, Any] = {
            "outbox": row.id,
            "automation": row.automation,
            "attempt": attempt,
            "target": result.target,
            "latency_ms": round(result.latency_ms, 1),
        }
        if result.ok:
            log.info("action_delivered", **fields)
        else:
            log.warning(
                "action_failed",
                retryable=result.retryable,
                status_code=result.status_code,
                reason=result.reason,
                **fields,
            )


def render_message(action: Mapping[str, Any], firing: Firing) -> Message:
    """Render a notify action's templates against the firing; raises TemplateError."""
    context = {
        "automation": {"name": firing.automation},
        **firing.context,
        "firing": {
            "id": firing.id,
            "state": firing.state,
            "at": firing.at.isoformat(),
            "event_ids": firing.event_ids,
        },
        "labels": firing.bucket,
    }
    subject = render(action.get("subject") or DEFAULT_SUBJECT, context)
    body = render(action.get("body") or DEFAULT_BODY, context)
    return Message(subject=subject, body=body)


def _failure(reason: str, *, target: str) -> SendResult:
    """A failure that retrying cannot fix (bad template, unknown channel)."""
    return SendResult.failure(target, 0.0, reason=reason, retryable=False)
