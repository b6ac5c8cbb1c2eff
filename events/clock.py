"""The one clock. Nothing else in runbell reads the wall time.

Time-dependent logic takes a :class:`Clock`; tests pass a
:class:`events.testing.FakeClock` and move it instead of sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
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
