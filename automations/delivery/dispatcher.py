"""The dispatcher: deliver what the outbox owes, record every attempt.

A pipeline of small stages over each claimed batch::

    [grouping: flush due groups into digest rows]
    → claim (bulk, SKIP LOCKED) → [grouping: grouped notifies into their groups, one transaction]
      → throttle (per-channel token bucket: defer, never drop)
      → execute (one attempt per row, concurrently, renders off the loop)
      → retry policy (per action: backoff + jitter, Retry-After, max attempts, max age)
      → dead letter + fallback intent → emit action events → record (bulk, one transaction)

One stage owns backoff (``retry``, used here); notifiers and orchestrator adapters never retry.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from automations.delivery.actions import (
    Emit,
    Job,
    RunController,
    Runtime,
    StoredAction,
    action_event,
    execute,
    load_action,
    prepare,
    template_context,
)
from automations.delivery.grouping_stage import DIGEST_STATE, GroupingStage
from automations.delivery.retry import FALLBACK_SUFFIX, RetryPolicy, fallback_intent, next_status
from automations.delivery.throttle import TokenBucket, throttle
from automations.spec import NotifyAction
from automations.state import AttemptRow, Firing, Intent, OutboxRow, Outcome, StateStore
from automations.state.model import as_read
from events.clock import Clock
from events.model import Event
from notifiers import HttpClient, Notifier, Redactor, SendResult

log = structlog.get_logger("runbell.dispatcher")

__all__ = ["FALLBACK_SUFFIX", "Dispatcher", "GroupingStage", "RetryPolicy"]

_COMMITTED_MAX = 4096

Claimed = tuple[OutboxRow, StoredAction]
"""A claimed row and its action, parsed once from the row's JSON at the claim."""


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
        redactor: Redactor | None = None,
    ) -> None:
        self.state = state
        # The config's secrets: masked out of every reason and target before the log
        # line, the attempt, the outbox row and the action event are made from them.
        self.redactor = redactor or Redactor()
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
        # Firings the engine just committed with intents, by id: the claim that takes
        # their rows uses these instead of reading and decoding them again. Only a
        # shortcut: a firing not here (a retry, a restart, a full cache) is read.
        self._committed: dict[str, Firing] = {}

    def wake(self) -> None:
        self._wake.set()

    def committed(self, firings: Sequence[Firing]) -> None:
        """The engine's ``on_intents`` hook: a commit owes new rows; these are its firings."""
        if len(self._committed) + len(firings) > _COMMITTED_MAX:
            self._committed.clear()  # firings whose rows are never claimed here (no action)
        for firing in firings:
            self._committed[firing.id] = as_read(firing)
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
            self.runtime.http = HttpClient()
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
                await self._flush_groups()
                room = self.concurrency - len(self._in_flight)
                claimed = await self._claim(room)
            except Exception as exc:  # keep delivering; the next pass retries
                log.error("dispatch_pass_failed", error=str(exc))
                claimed = room = 0
            if claimed and claimed >= room:
                continue  # the claim was full: more may be due now
            # Fewer than asked: nothing else is due. Intents committed since the claim
            # set the wake-up, so the idle wait returns at once for them.
            await self._idle()
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        await self._record_finished()

    async def _idle(self) -> None:
        """Sleep until woken (new intents, a finished attempt, a grouped batch) or until,
        on the injected clock, the next row or the next group flush is due."""
        moments: list[datetime] = []
        if len(self._in_flight) < self.concurrency:
            next_at = await self.state.next_due_at()
            if next_at is not None:
                moments.append(next_at)
        if self.grouping is not None:
            flush_at = await self.grouping.next_flush()
            if flush_at is not None:
                moments.append(flush_at)
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
        if moments:
            waits.add(asyncio.ensure_future(self.clock.sleep_until(min(moments))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _flush_groups(self) -> int:
        """Owe the digests of the groups due now (outbox rows the next claim picks up)."""
        if self.grouping is None:
            return 0
        owed = await self.grouping.flush(self.clock.now())
        if owed:
            await self._notify_progress()
        return owed

    async def _group(
        self, rows: list[Claimed], firings: Mapping[str, Firing], now: datetime
    ) -> list[Claimed]:
        """Hand the grouped notifies to the grouping stage; the rows left to send."""
        if self.grouping is None:
            return rows
        grouped: list[tuple[OutboxRow, NotifyAction, Firing]] = []
        rest: list[Claimed] = []
        for row, action in rows:
            firing = firings.get(row.firing_id)
            if (
                firing is not None
                and isinstance(action, NotifyAction)
                and self.grouping.claims(action, firing)
            ):
                grouped.append((row, action, firing))
            else:
                rest.append((row, action))
        if grouped:
            await self.grouping.absorb(grouped, now)
            await self._notify_progress()
        return rest

    async def _notify_progress(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _take(
        self, now: datetime, room: int
    ) -> tuple[int, list[Claimed], Mapping[str, Firing]]:
        """Claim up to ``room`` due rows and parse their actions (the one place a row's
        stored JSON becomes the typed action); hand grouped ones to their group and
        defer rate-limited ones. Returns (rows claimed, rows to send now with their
        actions, their firings)."""
        # The claim reads the snapshot off the loop: engine commits during it add to a
        # new dict; what this claim did not use goes back (bounded by ``committed``).
        known, self._committed = self._committed, {}
        claimed, firings = await self.state.claim_due_with_firings(
            now, now + self.policy.lease, room, known
        )
        if len(known) > len(firings):
            for used in firings:
                known.pop(used, None)
            if len(known) + len(self._committed) <= _COMMITTED_MAX:
                self._committed = known | self._committed
        if not claimed:
            return 0, [], {}
        typed = [(row, load_action(row.action)) for row in claimed]
        rows = await throttle(
            self.state, self.rate_limits, await self._group(typed, firings, now), now
        )
        return len(claimed), rows, firings

    async def _claim(self, room: int) -> int:
        now = self.clock.now()
        claimed, rows, firings = await self._take(now, room)
        jobs = await self._prepare(rows, firings)
        for row, action in rows:
            task = asyncio.create_task(
                self._deliver(row, action, firings.get(row.firing_id), now, jobs.get(row.id))
            )
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return claimed

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
        await self._notify_progress()

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
        """One complete pass (flush due groups, claim, group, send, record) over what is
        due now; for tests and tools.

        Returns how many rows were claimed (rows deferred by a rate limit and rows
        taken into a group included).
        """
        now = self.clock.now()
        await self._flush_groups()
        claimed, rows, firings = await self._take(now, 10_000)
        jobs = await self._prepare(rows, firings)
        finished = await asyncio.gather(
            *(
                self._deliver(row, action, firings.get(row.firing_id), now, jobs.get(row.id))
                for row, action in rows
            )
        )
        await self._record(finished)
        return claimed

    async def _prepare(
        self, rows: Sequence[Claimed], firings: Mapping[str, Firing]
    ) -> dict[str, Job]:
        """The batch's notify jobs with their messages rendered, in one worker-thread hop
        (rendering is CPU work with a time limit: off the loop, but not one hop per row)."""
        jobs = [
            Job(row, action, firing, template_context(firing, self.ui_base_url))
            for row, action in rows
            if isinstance(action, NotifyAction)
            and (firing := firings.get(row.firing_id)) is not None
            and firing.state != DIGEST_STATE
        ]
        if not jobs:
            return {}
        try:
            prepared = await asyncio.to_thread(prepare, jobs)
        except Exception as exc:  # each executor renders for itself then
            log.error("prepare_failed", error=str(exc), count=len(jobs))
            return {}
        return {job.row.id: job for job in prepared}

    async def _deliver(
        self,
        row: OutboxRow,
        action: StoredAction,
        firing: Firing | None,
        now: datetime,
        job: Job | None = None,
    ) -> _Finished:
        action_type = action.type
        if firing is None:
            result = SendResult.failed("-", f"firing {row.firing_id} is missing")
        else:
            if job is None:
                job = Job(row, action, firing, template_context(firing, self.ui_base_url))
            result = await self._execute(job)
        result = self._masked(result)
        self._log(row, action_type, result)
        status, next_at = next_status(row, action, result, now, self.policy)
        # Every field given, typed: no validation. (model_construct skips configuring the
        # mappers; the claim that returned ``row`` has just done it.)
        attempt = AttemptRow.model_construct(
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
        spawn: tuple[Intent, ...] = ()
        if status == "dead":
            self._log_dead(row, action_type, result)
            spawn = fallback_intent(row, action)
        outcome = Outcome(
            attempt,
            status,
            next_at,
            None if result.ok else result.reason[:2000],
            ref=dict(result.ref) if result.ref else None,
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

    async def _execute(self, job: Job) -> SendResult:
        if job.firing.state == DIGEST_STATE:
            if self.grouping is None:
                return SendResult.failed(
                    "-", "a digest needs the grouping stage: wire Dispatcher(grouping=...)"
                )
            return await self.grouping.deliver(job)
        return await execute(job, self.runtime)

    def _masked(self, result: SendResult) -> SendResult:
        """``result`` with the config's secrets masked out of its reason and target (a
        target may echo them into a reason, in any position, encoded or not)."""
        if not self.redactor:
            return result
        reason, target = self.redactor.redact(result.reason), self.redactor.redact(result.target)
        if reason == result.reason and target == result.target:
            return result
        return dataclasses.replace(result, reason=reason, target=target)

    def _log_dead(self, row: OutboxRow, action_type: str, result: SendResult) -> None:
        # The one line saying an alert is lost (its fallback, if any, is owed next);
        # the Redactor configure_logging installs masks secrets in the reason.
        log.warning(
            "delivery_dead",
            outbox=row.id,
            automation=row.automation,
            action=action_type,
            attempts=row.attempts,
            target=result.target,
            reason=result.reason[:2000],
        )

    def _log(self, row: OutboxRow, action_type: str, result: SendResult) -> None:
        fields: dict[str, Any] = {
            "outbox": row.id,
            "automation": row.automation,
            "action": action_type,
            "attempt": row.attempts,
            "target": result.target,
            "latency_ms": round(result.latency_ms, 1),
        }
        if result.ok:
            # Info, so that a new user sees sends at the default level. One line per
            # delivery costs ~5 % of a core at 1,000/s (render + a write per line):
            # `--log-level warning` (RUNBELL_LOG_LEVEL) drops it, as the benches do.
            log.info("action_delivered", **fields)
        else:
            log.warning(
                "action_failed",
                retryable=result.retryable,
                status_code=result.status_code,
                reason=result.reason,
                **fields,
            )
