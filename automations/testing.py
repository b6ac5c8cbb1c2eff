"""Helpers for tests of code built on the service: wait for work to settle, bounded."""

from __future__ import annotations

import contextlib
import time

from automations.service import Service


async def settle(service: Service, timeout: float = 10.0) -> None:
    """Return once the bus is drained, nothing in the outbox is due and no attempt is in flight.

    Waits on the bus and the dispatcher's progress signal, never on a fixed sleep;
    raises TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    drain = getattr(service.bus, "drain", None)
    if drain is not None:
        await drain(timeout)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"outbox still has due actions after {timeout}s")
        due = await service.state.due(service.clock.now(), limit=1)
        if not due and not await service.state.outbox(status="sending", limit=1):
            return
        service.dispatcher.wake()
        # An attempt that finished between the check and the wait is caught by
        # the short bound and the re-check.
        with contextlib.suppress(TimeoutError):
            await service.dispatcher.progressed(min(remaining, 0.5))
