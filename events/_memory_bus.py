"""The in-process event bus: one ordered log, one committed offset per group.

Invariants (see ``events/CONTRACTS.md``):

* one log in publish order, so every resource's events keep their order;
* each consumer group has one task handing batches of up to ``max_batch``
  events to its handler; the group's offset advances only after the handler
  returned; a handler that raises is logged (``bus_handler_failed``) and gets
  the same batch again after a capped exponential backoff;
* nothing is dropped: ``publish`` waits while the slowest group lags
  ``capacity`` events; the prefix every group has committed is trimmed.

``stop()`` cancels the consumer tasks. A batch whose handler was cancelled was
not committed, so it is delivered again by the next ``start()`` (at-least-once).
The log lives in this object only: it does not survive the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from events._bus_common import TOPIC, BatchHandler, back_off
from events.model import Event

__all__ = ["MemoryBus"]


@dataclass
class _Group:
    name: str
    handler: BatchHandler
    max_batch: int
    committed: int = 0  # absolute offset of the next event to hand out
    task: asyncio.Task[None] | None = None


class MemoryBus:
    """The :class:`events.bus.EventBus` in one process, for the embedded default and tests.

    A group registered with ``subscribe`` sees every event still in the log from
    the moment it registered; subscribing an existing group again (after
    ``stop()``) replaces its handler and keeps its committed offset, like a new
    consumer joining a Kafka group.
    """

    def __init__(
        self,
        url: str = "memory://",
        topic: str = TOPIC,
        *,
        capacity: int = 100_000,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.url = url
        self.topic = topic
        self.capacity = capacity
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._log_events: list[Event] = []
        self._base = 0  # absolute offset of self._log_events[0]
        self._groups: dict[str, _Group] = {}
        # One condition for every state change (publish, commit): waiters re-check.
        self._changed = asyncio.Condition()
        self._running = False

    @property
    def _end(self) -> int:
        return self._base + len(self._log_events)

    # -- lifecycle ---------------------------------------------------------
    def subscribe(self, group: str, handler: BatchHandler, *, max_batch: int = 500) -> None:
        """Register ``handler`` for ``group``; call before ``start()``."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if self._running:
            raise RuntimeError("subscribe() before start(), or stop() first")
        existing = self._groups.get(group)
        committed = existing.committed if existing else self._base
        self._groups[group] = _Group(group, handler, max_batch, committed)

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for group in self._groups.values():
            group.task = asyncio.create_task(
                self._consume(group), name=f"memory-bus:{self.topic}:{group.name}"
            )

    async def stop(self) -> None:
        """Cancel the consumer tasks; an uncommitted batch comes again after ``start()``."""
        self._running = False
        tasks = [g.task for g in self._groups.values() if g.task is not None]
        for group in self._groups.values():
            group.task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- publishing --------------------------------------------------------
    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events``; waits while the slowest group lags ``capacity`` events.

        A batch larger than the free room is appended in parts as room frees up,
        so the lag never exceeds ``capacity``. Only cancellation can interrupt it,
        and then the parts already appended stay published.
        """
        pending = list(events)
        while pending:
            async with self._changed:
                await self._changed.wait_for(lambda: self._lag() < self.capacity)
                room = self.capacity - self._lag()
                self._log_events.extend(pending[:room])
                pending = pending[room:]
                self._trim()
                self._changed.notify_all()

    async def drain(self, timeout: float = 10.0) -> None:
        """Return once every group has committed everything published so far.

        Raises :class:`TimeoutError` after ``timeout`` seconds; a stopped bus
        with uncommitted events therefore times out.
        """
        target = self._end

        def drained() -> bool:
            return all(g.committed >= target for g in self._groups.values())

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(drained)

    # -- internals ---------------------------------------------------------
    def _lag(self) -> int:
        if not self._groups:
            return 0
        return self._end - min(g.committed for g in self._groups.values())

    def _trim(self) -> None:
        """Forget the prefix every group has committed (all of it with no group)."""
        low = min((g.committed for g in self._groups.values()), default=self._end)
        if low > self._base:
            del self._log_events[: low - self._base]
            self._base = low

    async def _consume(self, group: _Group) -> None:
        failures = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: group.committed < self._end)
                start = group.committed - self._base
                batch = self._log_events[start : start + group.max_batch]
            try:
                await group.handler(batch)
            except Exception as exc:
                failures += 1
                await back_off(
                    exc,
                    group=group.name,
                    topic=self.topic,
                    attempt=failures,
                    initial=self._retry_initial,
                    maximum=self._retry_max,
                )
                continue
            failures = 0
            async with self._changed:
                group.committed += len(batch)
                self._trim()
                self._changed.notify_all()
