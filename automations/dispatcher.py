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

from automations.state import AttemptRow, Firing, OutboxRow, Outcome, StateStore
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
    """Delivers outbox rows: claim in bulk, send concurrently, record in bulk."""

    def __init__(
        self,
        state: StateStore,
        channels: Mapping[str, Notifier],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 64,
    ) -> None:
        self.state = state
        self.channels = channels
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[Outcome]] = set()
        self._finished: list[Outcome] = []
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def progressed(self, timeout: float) -> None:
        """Wait (bounded) until the next attempts have been recorded."""
        async with self._progress:
            await asyncio.wait_for(self._progress.wait(), timeout)

    async def start(self, *, exclusive: bool) -> None:
        """Start the loop. ``exclusive``: this is the only dispatcher on the database,
        so attempts left 'sending' by a crash are owed now rather than after their lease."""
        if exclusive:
            await self.state.release_in_flight(self.clock.now())
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="runbell-dispatcher")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let attempts in flight finish and be recorded (bounded)."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            # Unrecorded attempts stay 'sending' and are owed again after the lease.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._record_finished()
                claimed = await self._claim(self.concurrency - len(self._in_flight))
            except Exception as exc:  # keep delivering; the next pass retries
                log.error("dispatch_pass_failed", error=str(exc))
                claimed = 0
            if claimed:
                continue
            await self._idle()
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        await self._record_finished()

    async def _idle(self) -> None:
        """Sleep until woken (new intents, a finished attempt) or the next row is due."""
        timeout: float | None = None
        if len(self._in_flight) < self.concurrency:
            next_at = await self.state.next_due_at()
            if next_at is not None:
                timeout = max(0.0, (next_at - self.clock.now()).total_seconds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _claim(self, room: int) -> int:
        now = self.clock.now()
        rows = await self.state.claim_due(now, now + self.policy.lease, room)
        if not rows:
            return 0
        firings = await self.state.firings_by_id(r.firing_id for r in rows)
        for row in rows:
            task = asyncio.create_task(self._deliver(row, firings.get(row.firing_id), now))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[Outcome]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._finished.append(task.result())
        self._wake.set()

    async def _record_finished(self) -> None:
        finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            await self.state.record_attempts(finished)
        except Exception:
            self._finished[:0] = finished  # keep them: recorded on the next pass
            raise
        async with self._progress:
            self._progress.notify_all()

    async def dispatch_due(self) -> int:
        """One complete pass (claim, send, record) over what is due now; for tests and tools."""
        now = self.clock.now()
        rows = await self.state.claim_due(now, now + self.policy.lease, limit=10_000)
        firings = await self.state.firings_by_id(r.firing_id for r in rows)
        outcomes = await asyncio.gather(
            *(self._deliver(row, firings.get(row.firing_id), now) for row in rows)
        )
        await self.state.record_attempts(outcomes)
        return len(rows)

    async def _deliver(self, row: OutboxRow, firing: Firing | None, now: datetime) -> Outcome:
        result = await self._send(row, firing)
        self._log(row, result)
        status, next_at = self._next(row, result, now)
        attempt = AttemptRow(
            outbox_id=row.id,
            attempt=row.attempts,
            at=now,
            ok=result.ok,
            retryable=result.retryable,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            target=result.target,
            reason=result.reason[:2000],
        )
        return Outcome(attempt, status, next_at, None if result.ok else result.reason[:2000])

    def _next(
        self, row: OutboxRow, result: SendResult, now: datetime
    ) -> tuple[str, datetime | None]:
        if result.ok:
            return "sent", None
        too_old = now - row.created_at >= self.policy.max_age
        if not result.retryable or row.attempts >= self.policy.max_attempts or too_old:
            return "dead", None
        return "pending", now + self.policy.delay(row.attempts, result.retry_after)

    async def _send(self, row: OutboxRow, firing: Firing | None) -> SendResult:
        action = row.action
        channel = self.channels.get(str(action.get("channel")))
        if channel is None:
            return _failure(f"unknown channel {action.get('channel')!r}", target="-")
        if firing is None:
            return _failure(f"firing {row.firing_id} is missing", target=channel.target)
        try:
            # Rendering is CPU work with its own time limit: keep it off the loop.
            message = await asyncio.to_thread(render_message, action, firing)
        except TemplateError as exc:
            return _failure(f"template: {exc}", target=channel.target)
        return await channel.send(message, idempotency_key=row.id)

    def _log(self, row: OutboxRow, result: SendResult) -> None:
        fields: dict[str, Any] = {
            "outbox": row.id,
            "automation": row.automation,
            "attempt": row.attempts,
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
