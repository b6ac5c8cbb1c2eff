"""The retry policy: one stage owns backoff, and it is the dispatcher's.

By default a failed attempt is retried on a fixed schedule that spans a real outage
(Svix's: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each step jittered
±20 %), at most 9 attempts, none after 3 days. An action's ``retry:`` overrides the
fields it gives: ``backoff`` switches to exponential backoff from it (doubling,
jittered, capped at 5 min). ``Retry-After`` wins when larger, in either mode.
Notifiers and orchestrator adapters never retry. A dead notify with ``fallback``
owes one more intent (:func:`fallback_intent`).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from automations.delivery.actions import InvalidAction, StoredAction
from automations.spec import NotifyAction, RetrySpec
from automations.state import Intent, OutboxRow
from notifiers import SendResult

__all__ = ["DEFAULT_SCHEDULE", "FALLBACK_SUFFIX", "RetryPolicy", "fallback_intent", "next_status"]

log = structlog.get_logger("runbell.dispatcher")

FALLBACK_SUFFIX = ":fallback"

_S, _MIN, _H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
DEFAULT_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    5 * _S,
    5 * _MIN,
    30 * _MIN,
    2 * _H,
    5 * _H,
    10 * _H,
    10 * _H,
)
"""The wait after failed attempt n (1-based) is step n - 1: about 28 h in all, so a
channel down for minutes or a night still gets the alert. Svix's schedule."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is retried, and when the row is dead instead.

    ``base_delay`` None: the ``schedule`` (its last step repeats past its end), each
    step spread by ±``jitter``. ``base_delay`` set: exponential from it, doubling up
    to ``max_delay``, jittered in [cap/2, cap]. ``Retry-After`` wins when larger.
    The defaults (9 attempts, 3 days) let the whole default schedule run."""

    max_attempts: int = len(DEFAULT_SCHEDULE) + 1
    base_delay: timedelta | None = None
    max_delay: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=3)
    lease: timedelta = timedelta(seconds=60)
    schedule: tuple[timedelta, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after: float | None) -> timedelta:
        """The wait after failed attempt ``attempt`` (1-based); ``Retry-After`` wins when larger."""
        if self.base_delay is None:
            step = self.schedule[min(attempt, len(self.schedule)) - 1].total_seconds()
            # Jitter spreads the retries of one outage so they do not arrive together.
            spread = step * self.jitter
            backoff = timedelta(seconds=random.uniform(step - spread, step + spread))
        else:
            cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1))).total_seconds()
            backoff = timedelta(seconds=random.uniform(cap / 2, cap))
        if retry_after is not None:
            backoff = max(backoff, timedelta(seconds=retry_after))
        return backoff

    def for_action(self, retry: RetrySpec | None) -> RetryPolicy:
        """This policy with an action's own ``retry:`` (max_attempts, max_age, backoff).

        Only the fields the action sets replace this policy's: a field left out is
        None in the model (and in the outbox's copy of it, which stores the model in
        full). ``backoff`` set means exponential backoff from it instead of the schedule."""
        if retry is None:
            return self
        changes: dict[str, Any] = {}
        if retry.max_attempts is not None:
            changes["max_attempts"] = retry.max_attempts
        if retry.max_age is not None:
            changes["max_age"] = retry.max_age
        if retry.backoff is not None:
            changes["base_delay"] = retry.backoff
        return dataclasses.replace(self, **changes) if changes else self


def next_status(
    row: OutboxRow, action: StoredAction, result: SendResult, now: datetime, defaults: RetryPolicy
) -> tuple[str, datetime | None]:
    """The row's status after ``result``: sent, pending (retried at the returned time) or dead."""
    if result.ok:
        return "sent", None
    # Read only on a failure: most attempts succeed. An invalid action fails unretryably.
    policy = defaults.for_action(None if isinstance(action, InvalidAction) else action.retry)
    too_old = now - row.created_at >= policy.max_age
    if not result.retryable or row.attempts >= policy.max_attempts or too_old:
        return "dead", None
    return "pending", now + policy.delay(row.attempts, result.retry_after)


def fallback_intent(row: OutboxRow, action: StoredAction) -> tuple[Intent, ...]:
    """A dead notify with ``fallback`` owes the same message on the fallback channel: the
    notify's JSON with the fallback as its channel and no fallback of its own (no chain)."""
    if not isinstance(action, NotifyAction) or not action.fallback:
        return ()
    if row.id.endswith(FALLBACK_SUFFIX):
        return ()
    owed = action.model_copy(update={"channel": action.fallback, "fallback": None})
    log.warning("action_fallback", outbox=row.id, channel=action.fallback)
    stored = owed.model_dump(mode="json")
    return (Intent(row.firing_id, row.automation, row.action_index, stored, FALLBACK_SUFFIX),)
