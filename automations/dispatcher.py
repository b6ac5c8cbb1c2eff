"""The dispatcher: deliver what the outbox owes, record every attempt.

A pipeline of small stages over each claimed batch::

    claim (bulk, SKIP LOCKED) → throttle (per-channel token bucket: defer, never drop)
      → [grouping hook] → execute (one attempt per row, concurrently, renders off the loop)
      → retry policy (per action: backoff + jitter, Retry-After, max attempts, max age)
      → dead letter + fallback intent → emit action events → record (bulk, one transaction)

One stage owns backoff (here); notifiers and orchestrator adapters never retry.
An attempt is claimed with a conditional update, so two dispatchers never send
the same row at once; an attempt interrupted by a crash is retried when its
lease ends (at start-up in the single-process embedded default). The outbox id
is the idempotency key the target receives, so a target that honours it sees
one effect even then.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import structlog
from pydantic import TypeAdapter

from automations.actions import (
    ActionResult,
    Emit,
    Job,
    RunController,
    Runtime,
    action_event,
    execute,
    template_context,
)
from automations.channels import TokenBucket
from automations.state import AttemptRow, Firing, Intent, OutboxRow, Outcome, StateStore
from events.clock import Clock
from events.model import Event
from notifiers import Notifier

log = structlog.get_logger("runbell.dispatcher")

FALLBACK_SUFFIX = ":fallback"
_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)


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

    def for_action(self, action: Mapping[str, Any]) -> RetryPolicy:
        """This policy with the action's own ``retry:`` (max_attempts, max_age, backoff)."""
        retry = action.get("retry")
        if not isinstance(retry, Mapping):
            return self
        changes: dict[str, Any] = {}
        if isinstance(retry.get("max_attempts"), int):
            changes["max_attempts"] = retry["max_attempts"]
        for key, attr in (("max_age", "max_age"), ("backoff", "base_delay")):
            value = _duration(retry.get(key))
            if value is not None:
                changes[attr] = value
        return dataclasses.replace(self, **changes) if changes else self


class GroupingStage(Protocol):
    """Hook for notification grouping (``automations/grouping.py``, issue 4 point 3).

    Notify intents whose action has ``group_by`` are offered to the stage instead
    of being sent one by one; the stage answers with the attempt's outcome (e.g.
    "grouped into <group key>") and later owes one digest per group as its own
    outbox intent. ``None`` means "not mine: send it now".
    """

    async def offer(self, job: Job) -> ActionResult | None: ...


@dataclass(slots=True)
class _Finished:
    outcome: Outcome
    events: list[Event] = field(default_factory=list)


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
        controllers: Mapping[str, RunController] | None = None,
        emit: Emit | None = None,
        rate_limits: Mapping[str, TokenBucket] | None = None,
        ui_base_url: str | None = None,
        grouping: GroupingStage | None = None,
    ) -> None:
        self.state = state
        self.channels = channels
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self.rate_limits = dict(rate_limits or {})
        self.ui_base_url = ui_base_url
        self.grouping = grouping
        self.runtime = Runtime(
            state=state,
            clock=clock,
            channels=channels,
            controllers=dict(controllers or {}),
            emit=emit,
        )
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[_Finished]] = set()
        self._finished: list[_Finished] = []
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
        if self.runtime.http is None:
            self.runtime.http = httpx.AsyncClient(follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name="runbell-dispatcher")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let attempts in flight finish and be recorded (bounded)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                # Unrecorded attempts stay 'sending' and are owed again after the lease.
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self.runtime.http is not None:
            await self.runtime.http.aclose()
            self.runtime.http = None

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
        claimed = await self.state.claim_due(now, now + self.policy.lease, room)
        if not claimed:
            return 0
        rows = await self._throttle(claimed, now)
        firings = await self.state.firings_by_id(r.firing_id for r in rows)
        for row in rows:
            task = asyncio.create_task(self._deliver(row, firings.get(row.firing_id), now))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[_Finished]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._finished.append(task.result())
        self._wake.set()

    async def _record_finished(self) -> None:
        finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            await self._record(finished)
        except Exception:
            self._finished[:0] = finished  # keep them: recorded on the next pass
            raise
        async with self._progress:
            self._progress.notify_all()

    async def _record(self, finished: Sequence[_Finished]) -> None:
        # Action events go out before the record: a crash in between re-sends the
        # same deterministic ids on the next attempt, which ingestion ignores.
        events = [event for f in finished for event in f.events]
        if events and self.runtime.emit is not None:
            try:
                await self.runtime.emit(events)
            except Exception as exc:  # the trail must never block deliveries
                log.error("action_events_failed", error=str(exc), count=len(events))
        await self.state.record_attempts([f.outcome for f in finished])

    async def dispatch_due(self) -> int:
        """One complete pass (claim, send, record) over what is due now; for tests and tools.

        Returns how many rows were claimed (rows deferred by a rate limit included).
        """
        now = self.clock.now()
        claimed = await self.state.claim_due(now, now + self.policy.lease, limit=10_000)
        rows = await self._throttle(claimed, now)
        firings = await self.state.firings_by_id(r.firing_id for r in rows)
        finished = await asyncio.gather(
            *(self._deliver(row, firings.get(row.firing_id), now) for row in rows)
        )
        await self._record(finished)
        return len(claimed)

    async def _throttle(self, rows: list[OutboxRow], now: datetime) -> list[OutboxRow]:
        """Rows whose channel has a token now; the others are deferred until one is due."""
        if not self.rate_limits:
            return rows
        go: list[OutboxRow] = []
        deferred: list[tuple[str, datetime]] = []
        for row in rows:
            bucket = self.rate_limits.get(str(row.action.get("channel")))
            wait = bucket.take(now) if bucket is not None else timedelta(0)
            if wait > timedelta(0):
                deferred.append((row.id, now + wait))
            else:
                go.append(row)
        if deferred:
            await self.state.defer(deferred)
            log.info("rate_limited", deferred=len(deferred))
        return go

    async def _deliver(self, row: OutboxRow, firing: Firing | None, now: datetime) -> _Finished:
        action_type = str(row.action.get("type", "?"))
        if firing is None:
            result = ActionResult.failed("-", f"firing {row.firing_id} is missing")
        else:
            job = Job(row, firing, template_context(firing, self.ui_base_url))
            result = await self._execute(job)
        self._log(row, result)
        policy = self.policy.for_action(row.action)
        status, next_at = _next(row, result, now, policy)
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
            series=row.series,
        )
        spawn = self._fallback(row) if status == "dead" else ()
        outcome = Outcome(
            attempt,
            status,
            next_at,
            None if result.ok else result.reason[:2000],
            ref=result.ref,
            spawn=spawn,
        )
        at = self.clock.now()
        events = []
        if row.attempts == 1:
            events.append(
                action_event("triggered", row=row, firing=firing, action_type=action_type, at=now)
            )
        if status == "sent":
            events.append(
                action_event(
                    "executed",
                    row=row,
                    firing=firing,
                    action_type=action_type,
                    at=at,
                    result=result,
                )
            )
        elif status == "dead":
            events.append(
                action_event(
                    "failed", row=row, firing=firing, action_type=action_type, at=at, result=result
                )
            )
        return _Finished(outcome, events)

    async def _execute(self, job: Job) -> ActionResult:
        if self.grouping is not None and job.row.action.get("group_by"):
            grouped = await self.grouping.offer(job)
            if grouped is not None:
                return grouped
        return await execute(job, self.runtime)

    def _fallback(self, row: OutboxRow) -> tuple[Intent, ...]:
        """A dead notify with ``fallback`` owes the same message on the fallback channel."""
        fallback = row.action.get("fallback")
        if row.action.get("type") != "notify" or not fallback or row.id.endswith(FALLBACK_SUFFIX):
            return ()
        action = {**row.action, "channel": fallback, "fallback": None}
        log.warning("action_fallback", outbox=row.id, channel=fallback)
        return (Intent(row.firing_id, row.automation, row.action_index, action, FALLBACK_SUFFIX),)

    def _log(self, row: OutboxRow, result: ActionResult) -> None:
        fields: dict[str, Any] = {
            "outbox": row.id,
            "automation": row.automation,
            "action": row.action.get("type"),
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


def _next(
    row: OutboxRow, result: ActionResult, now: datetime, policy: RetryPolicy
) -> tuple[str, datetime | None]:
    if result.ok:
        return "sent", None
    too_old = now - row.created_at >= policy.max_age
    if not result.retryable or row.attempts >= policy.max_attempts or too_old:
        return "dead", None
    return "pending", now + policy.delay(row.attempts, result.retry_after)


def _duration(value: Any) -> timedelta | None:
    """A duration as stored in an action (ISO 8601 from model_dump, or seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return _TIMEDELTA.validate_python(value)
        except ValueError:
            return None
    return None
