"""The one clock. Nothing else in runbell reads the wall time.

Time-dependent logic takes a :class:`Clock`; tests pass a
:class:`events.testing.FakeClock` and move it instead of sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep_until(self, moment: datetime) -> None:
        """Return once ``now() >= moment``."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        delay = (moment - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class Stamps:
    """Strictly increasing ``received`` stamps from a clock: its ``now()``, or one
    microsecond past the last stamp when the clock has not moved on (or went back)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.last: datetime | None = None  # stamps continue after this

    def next(self) -> datetime:
        now = self._clock.now()
        if self.last is not None and now <= self.last:
            now = self.last + timedelta(microseconds=1)
        self.last = now
        return now
