"""Fakes for tests of code built on ``events``: a clock that tests move by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]


class FakeClock:
    """A :class:`events.clock.Clock` that only moves when told to.

    ``sleep_until`` waiters wake when ``advance``/``set`` moves time past their moment.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, moment: datetime) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= moment)

    async def advance(self, delta: timedelta) -> None:
        await self.set(self._now + delta)

    async def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        async with self._moved:
            self._now = max(self._now, moment)
            self._moved.notify_all()
