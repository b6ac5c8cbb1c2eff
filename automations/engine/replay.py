"""`runbell test`: replay events through the real engine in virtual time.

Each event is processed at its arrival time (``received`` when present, else
``occurred``), in arrival order; the automations exist from ``start`` (default:
the first arrival); after the last event the clock runs on to ``until`` so
pending deadlines fire. The engine, its state store (a throw-away SQLite file)
and its timers are the ones ``serve`` uses; only the clock is virtual.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from automations.engine import Engine
from automations.spec import Config
from automations.state import Firing, StateStore
from events.database import create_engine
from events.model import Event
from events.testing import FakeClock

__all__ = ["arrival", "drive", "firing_line", "replay", "run_timers"]


def arrival(event: Event) -> datetime:
    return event.received or event.occurred


async def replay(
    config: Config,
    events: Sequence[Event],
    *,
    start: datetime | None = None,
    until: datetime | None = None,
) -> list[Firing]:
    """The firings ``events`` cause, in the order the engine records them."""
    ordered = sorted(events, key=arrival)
    first = start or (arrival(ordered[0]) if ordered else None)
    if first is None:
        return []
    clock = FakeClock(first)
    with tempfile.TemporaryDirectory(prefix="runbell-test-") as workdir:
        db = create_engine(f"sqlite:///{Path(workdir) / 'replay.db'}")
        try:
            state = StateStore(db)
            await state.create_tables()
            engine = Engine(config, state, clock, record=True)
            await engine.load()
            await drive(engine, clock, ordered, until)
            return list(engine.recorded)
        finally:
            await db.dispose()


async def drive(
    engine: Engine, clock: FakeClock, events: Sequence[Event], until: datetime | None
) -> None:
    """What ``serve`` does, in virtual time: each event at its arrival, after the timers
    due before it; then the timers up to ``until``."""
    for event in events:
        await run_timers(engine, clock, arrival(event))
        await clock.set(max(clock.now(), arrival(event)))
        await engine.handle([event])
    if until is not None:
        await run_timers(engine, clock, until)
        await clock.set(max(clock.now(), until))


async def run_timers(engine: Engine, clock: FakeClock, up_to: datetime) -> None:
    """Fire every timer due before ``up_to``, each at its own moment."""
    for _ in range(1_000_000):  # bounded: each pass settles at least one deadline
        wake_at = engine.next_wakeup()
        if wake_at is None or wake_at > up_to:
            return
        await clock.set(max(clock.now(), wake_at))
        await engine.tick()
        if engine.next_wakeup() == wake_at:
            return


def firing_line(firing: Firing) -> dict[str, Any]:
    return {
        "automation": firing.automation,
        "state": firing.state,
        "at": firing.at.isoformat().replace("+00:00", "Z"),
        "bucket": firing.bucket,
        "event_ids": firing.event_ids,
    }
