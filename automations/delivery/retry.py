"""The retry policy: one stage owns backoff, and it is the dispatcher's.

Exponential backoff with full jitter (``Retry-After`` wins when larger), at most
``max_attempts`` attempts, none after ``max_age``; an action's own ``retry:``
overrides the defaults. Notifiers and orchestrator adapters never retry.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from automations.delivery.actions import ActionResult
from automations.state import OutboxRow

__all__ = ["RetryPolicy", "next_status"]

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


def next_status(
    row: OutboxRow, result: ActionResult, now: datetime, defaults: RetryPolicy
) -> tuple[str, datetime | None]:
    if result.ok:
        return "sent", None
    policy = defaults.for_action(row.action)  # read only on a failure: most attempts succeed
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
