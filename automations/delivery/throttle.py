"""The throttle stage: a channel's ``rate_limit`` as a token bucket; defer, never drop."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import structlog

from automations.delivery.actions import StoredAction
from automations.spec import NotifyAction, RateLimit
from automations.state import OutboxRow, StateStore

__all__ = ["TokenBucket", "throttle"]

log = structlog.get_logger("runbell.dispatcher")


class TokenBucket:
    """``count`` tokens per ``per``, bursting up to ``count``; time is whatever ``now`` says."""

    def __init__(self, limit: RateLimit) -> None:
        self.capacity = float(limit.count)
        self.interval = limit.per / limit.count  # time to earn one token
        self._tokens = self.capacity
        self._at: datetime | None = None

    def _refill(self, now: datetime) -> None:
        if self._at is not None and now > self._at:
            earned = (now - self._at) / self.interval
            self._tokens = min(self.capacity, self._tokens + earned)
        if self._at is None or now > self._at:
            self._at = now

    def take(self, now: datetime) -> timedelta:
        """Take a token: ``0`` when one was free, else how long until one will be (none taken)."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return timedelta(0)
        return self.interval * (1 - self._tokens)


async def throttle(
    state: StateStore,
    rate_limits: Mapping[str, TokenBucket],
    rows: list[tuple[OutboxRow, StoredAction]],
    now: datetime,
) -> list[tuple[OutboxRow, StoredAction]]:
    """Rows whose channel has a token now; the others are deferred until one is due."""
    if not rate_limits:
        return rows
    go: list[tuple[OutboxRow, StoredAction]] = []
    deferred: list[tuple[str, datetime]] = []
    for row, action in rows:
        bucket = rate_limits.get(action.channel) if isinstance(action, NotifyAction) else None
        wait = bucket.take(now) if bucket is not None else timedelta(0)
        if wait > timedelta(0):
            deferred.append((row.id, now + wait))
        else:
            go.append((row, action))
    if deferred:
        await state.defer(deferred)
        log.info("rate_limited", deferred=len(deferred))
    return go
