"""The retry policy: one stage owns backoff, and it is the dispatcher's.

Exponential backoff with full jitter (``Retry-After`` wins when larger), at most
``max_attempts`` attempts, none after ``max_age``; an action's own ``retry:``
overrides the defaults. Notifiers and orchestrator adapters never retry. A dead
notify with ``fallback`` owes one more intent (:func:`fallback_intent`).
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

__all__ = ["FALLBACK_SUFFIX", "RetryPolicy", "fallback_intent", "next_status"]

log = structlog.get_logger("runbell.dispatcher")

FALLBACK_SUFFIX = ":fallback"


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

    def for_action(self, retry: RetrySpec | None) -> RetryPolicy:
        """This policy with an action's own ``retry:`` (max_attempts, max_age, backoff).

        Only the fields the stored action gives replace this policy's (an intent the
        engine wrote gives all three: it stores the full model)."""
        if retry is None:
            return self
        given = retry.model_fields_set
        changes: dict[str, Any] = {}
        if "max_attempts" in given:
            changes["max_attempts"] = retry.max_attempts
        if "max_age" in given:
            changes["max_age"] = retry.max_age
        if "backoff" in given:
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
