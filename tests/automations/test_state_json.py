"""Integers past 64 bits in a firing's context and an intent's action come back exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from automations.state import Firing, Intent, StateStore
from events.database import create_engine

T0 = datetime(2026, 12, 1, tzinfo=UTC)
BIG = {"up": 2**70, "down": -(2**70), "edge": -(2**63) - 1}


async def test_big_integers_in_firing_context_and_action_stay_exact(url: str) -> None:
    """What the dispatcher reads back renders 2**70 as 2**70, not 1.18e21."""
    db = create_engine(url)
    try:
        state = StateStore(db)
        await state.create_tables()
        event = {"id": "e1", "event": "flow-run.Failed", "payload": BIG}
        firing = Firing("firing-1", "etl", "triggered", T0, {}, ["e1"], {"events": [event]})
        action = {"type": "emit-event", "event": "x.y", "payload": BIG}
        await state.commit_batch(
            processed=["e1"],
            firings=[firing],
            intents=[Intent(firing.id, "etl", 0, action)],
            now=T0,
            checkpoint=None,
        )
        rows, firings = await state.claim_due_with_firings(T0, T0 + timedelta(minutes=1), 10)
        assert rows[0].action["payload"] == BIG
        assert firings["firing-1"].context["events"][0]["payload"] == BIG
    finally:
        await db.dispose()
