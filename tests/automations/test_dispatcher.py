"""The dispatcher on a fake clock: delivery, retry policy, dead letters, claims."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from automations.dispatcher import Dispatcher, RetryPolicy
from automations.state import Firing, Intent, StateStore
from events.database import create_engine
from events.testing import FakeClock
from notifiers.testing import RecordingNotifier

POLICY = RetryPolicy(
    max_attempts=3,
    base_delay=timedelta(seconds=2),
    max_delay=timedelta(seconds=60),
    max_age=timedelta(hours=1),
)


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    store = StateStore(engine)
    await store.create_tables()
    yield store
    await engine.dispose()


async def owe(state: StateStore, clock: FakeClock, **action: object) -> str:
    """Record one firing with one notify intent; returns the outbox id."""
    firing = Firing(
        id=str(uuid4()),
        automation="a",
        state="triggered",
        at=clock.now(),
        bucket={},
        event_ids=["e1"],
        context={"event": {"event": "flow-run.Failed", "resource": {"resource.id": "flow-run.1"}}},
    )
    intent = Intent(firing.id, "a", 0, {"type": "notify", "channel": "team", **action})
    await state.commit_batch(
        processed=[], firings=[firing], intents=[intent], now=clock.now(), checkpoint=None
    )
    return intent.id


async def test_delivers_once_with_the_outbox_id_as_idempotency_key(state: StateStore) -> None:
    """A due intent is sent once, recorded as sent with one attempt, keyed by its outbox id."""
    clock, team = FakeClock(), RecordingNotifier()
    outbox_id = await owe(state, clock, subject="s {{ event.event }}", body="b")
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    assert await dispatcher.dispatch_due() == 1
    assert await dispatcher.dispatch_due() == 0
    assert [s.idempotency_key for s in team.sent] == [outbox_id]
    assert team.messages[0].subject == "s flow-run.Failed"
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("sent", 1)
    [attempt] = await state.attempts(outbox_id)
    assert attempt.ok
    assert attempt.target == "recording://test"


async def test_retryable_failures_back_off_then_dead_letter(state: StateStore) -> None:
    """Retryable failures wait an exponential, jittered delay; after max attempts: dead."""
    clock, team = FakeClock(), RecordingNotifier()
    team.fail("500", status_code=500)
    team.fail("502", status_code=502)
    team.fail("503", status_code=503)
    await owe(state, clock)
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    assert await dispatcher.dispatch_due() == 1
    [row] = await state.outbox()
    delay = row.next_attempt_at - clock.now()
    assert timedelta(seconds=1) <= delay <= timedelta(seconds=2)
    assert await dispatcher.dispatch_due() == 0  # not due yet: nothing sent early
    await clock.advance(delay)
    assert await dispatcher.dispatch_due() == 1
    [row] = await state.outbox()
    assert timedelta(seconds=2) <= row.next_attempt_at - clock.now() <= timedelta(seconds=4)
    await clock.advance(timedelta(seconds=4))
    assert await dispatcher.dispatch_due() == 1
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("dead", 3)
    assert row.last_error == "503"
    assert len(await state.attempts()) == 3


async def test_retry_after_is_honoured(state: StateStore) -> None:
    """A 429 with Retry-After: 30 is not retried before 30 s."""
    clock, team = FakeClock(), RecordingNotifier()
    team.fail("429", status_code=429, retry_after=30)
    await owe(state, clock)
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    await dispatcher.dispatch_due()
    [row] = await state.outbox()
    assert row.next_attempt_at - clock.now() >= timedelta(seconds=30)
    await clock.advance(timedelta(seconds=29))
    assert await dispatcher.dispatch_due() == 0
    await clock.advance(timedelta(seconds=1))
    assert await dispatcher.dispatch_due() == 1
    assert (await state.outbox())[0].status == "sent"


async def test_non_retryable_failure_is_recorded_once(state: StateStore) -> None:
    """A 4xx is not retried: one attempt, dead at once."""
    clock, team = FakeClock(), RecordingNotifier()
    team.fail("404 not found", retryable=False, status_code=404)
    await owe(state, clock)
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    await dispatcher.dispatch_due()
    await clock.advance(timedelta(hours=1))
    assert await dispatcher.dispatch_due() == 0
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("dead", 1)


async def test_template_error_fails_that_action_only(state: StateStore) -> None:
    """A template that fails to render dead-letters its action with the reason; others go out."""
    clock, team = FakeClock(), RecordingNotifier()
    await owe(state, clock, subject="{{ 1 / 0 }}")
    await owe(state, clock, subject="fine")
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    assert await dispatcher.dispatch_due() == 2
    assert [m.subject for m in team.messages] == ["fine"]
    dead = await state.outbox(status="dead")
    assert len(dead) == 1
    assert dead[0].last_error is not None
    assert dead[0].last_error.startswith("template:")


async def test_default_message_says_what_and_where(state: StateStore) -> None:
    """A notify with no subject/body still names the event and the resource."""
    clock, team = FakeClock(), RecordingNotifier()
    await owe(state, clock)
    await Dispatcher(state, {"team": team}, clock, policy=POLICY).dispatch_due()
    [message] = team.messages
    assert message.subject == "Flow run 'flow-run.1' failed"
    assert "flow-run.1" in message.body
    assert message.attributes["event"] == "flow-run.Failed"


async def test_two_dispatchers_never_send_the_same_row(state: StateStore) -> None:
    """Claims are conditional: racing dispatchers deliver each intent exactly once."""
    clock, team = FakeClock(), RecordingNotifier()
    for _ in range(20):
        await owe(state, clock)
    first = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    second = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    import asyncio

    await asyncio.gather(first.dispatch_due(), second.dispatch_due())
    keys = [s.idempotency_key for s in team.sent]
    assert len(keys) == 20
    assert len(set(keys)) == 20


async def test_in_flight_attempts_are_owed_again_after_a_crash(state: StateStore) -> None:
    """A row left 'sending' by a dead process is retried at start (exclusive) or after its lease."""
    clock, team = FakeClock(), RecordingNotifier()
    outbox_id = await owe(state, clock)
    claimed = await state.claim_due(clock.now(), clock.now() + POLICY.lease, limit=10)
    assert [row.id for row in claimed] == [outbox_id]  # then the process "dies"
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    assert await dispatcher.dispatch_due() == 0  # leased: not yet
    await clock.advance(POLICY.lease)
    assert await dispatcher.dispatch_due() == 1
    assert [s.idempotency_key for s in team.sent] == [outbox_id]
