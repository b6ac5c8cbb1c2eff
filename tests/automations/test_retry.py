"""The retry policy: the default schedule spans a real outage, ``retry:`` overrides it,
and a delivery that finally dies says so in the log."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from uuid import uuid4

import pytest
from structlog.testing import capture_logs

from automations.delivery.dispatcher import Dispatcher, RetryPolicy
from automations.delivery.retry import DEFAULT_SCHEDULE
from automations.spec import NotifyAction, RetrySpec
from automations.state import Firing, Intent, StateStore
from events.clock import Clock
from events.testing import FakeClock
from notifiers import Message, SendResult

S, MIN, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)

# After failed attempt n (1-based), the next one is due after SCHEDULE[n - 1]:
# Svix's schedule, the first attempt being the delivery itself.
SCHEDULE = [timedelta(0), 5 * S, 5 * MIN, 30 * MIN, 2 * H, 5 * H, 10 * H, 10 * H]


def test_the_default_schedule_is_svix_s() -> None:
    """Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts after the first,
    all inside the default max age (which spans the ~28 h schedule)."""
    policy = RetryPolicy()
    assert list(DEFAULT_SCHEDULE) == SCHEDULE
    assert policy.max_attempts == 9
    assert sum(SCHEDULE, timedelta(0)) * 1.2 < policy.max_age
    assert policy.max_age == timedelta(days=3)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (1, None, timedelta(0)),
        (2, None, 5 * S),
        (3, None, 5 * MIN),
        (4, None, 30 * MIN),
        (5, None, 2 * H),
        (6, None, 5 * H),
        (7, None, 10 * H),
        (8, None, 10 * H),
        (9, None, 10 * H),  # a longer retry: max_attempts keeps the last step
        (20, None, 10 * H),
        (1, 30.0, 30 * S),  # Retry-After wins when larger ...
        (2, 120.0, 2 * MIN),
        (3, 60.0, 5 * MIN),  # ... and not when smaller
        (7, 3600.0, 10 * H),
    ],
)
def test_default_delays_follow_the_schedule(
    attempt: int, retry_after: float | None, expected: timedelta
) -> None:
    """Without jitter the delay is the schedule's step; ``Retry-After`` wins when larger."""
    exact = dataclasses.replace(RetryPolicy(), jitter=0.0)
    assert exact.delay(attempt, retry_after) == expected


@pytest.mark.parametrize("attempt", range(1, 10))
def test_default_delays_are_jittered_within_20_percent(attempt: int) -> None:
    """Jitter spreads a step by at most ±20 % (so retries of one outage do not stampede)."""
    step = SCHEDULE[min(attempt, len(SCHEDULE)) - 1]
    delays = {RetryPolicy().delay(attempt, None) for _ in range(200)}
    assert all(step * 0.8 <= d <= step * 1.2 for d in delays)
    if step:
        assert len(delays) > 1  # jittered, not a fixed step
    # Retry-After is the target's word: never shortened by jitter.
    assert all(RetryPolicy().delay(attempt, 12 * 3600) >= 12 * H for _ in range(20))


def test_backoff_given_is_exponential_from_it_otherwise_the_schedule() -> None:
    """``retry: {backoff}`` keeps today's doubling (jittered in [cap/2, cap], cap 5 min);
    a ``retry:`` without backoff keeps the schedule, its other fields still apply."""
    exponential = RetryPolicy().for_action(RetrySpec.model_validate({"backoff": "PT2S"}))
    for attempt, cap in [(1, 2 * S), (2, 4 * S), (3, 8 * S), (10, 5 * MIN)]:
        for _ in range(50):
            assert cap / 2 <= exponential.delay(attempt, None) <= cap
    assert exponential.max_attempts == 9
    scheduled = RetryPolicy().for_action(RetrySpec.model_validate({"max_attempts": 4}))
    assert scheduled.max_attempts == 4
    assert dataclasses.replace(scheduled, jitter=0.0).delay(3, None) == 5 * MIN
    assert scheduled.max_age == timedelta(days=3)


def test_a_stored_retry_without_backoff_keeps_the_schedule() -> None:
    """The outbox stores the action in full (model_dump): an unset field stays unset."""
    spec = NotifyAction.model_validate(
        {"type": "notify", "channel": "team", "retry": {"max_attempts": 4}}
    )
    stored = NotifyAction.model_validate(spec.model_dump(mode="json"))
    policy = dataclasses.replace(RetryPolicy(), jitter=0.0).for_action(stored.retry)
    assert (policy.max_attempts, policy.max_age) == (4, timedelta(days=3))
    assert policy.delay(2, None) == 5 * S


# --- the dispatcher with the default policy, on the fake clock -----------------------


class Outage:
    """A channel that fails (503, retryable) until ``until`` on the clock, then delivers."""

    def __init__(self, clock: Clock, until: datetime) -> None:
        self.clock, self.until = clock, until
        self.attempts: list[datetime] = []

    @property
    def target(self) -> str:
        return "outage://team"

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        now = self.clock.now()
        self.attempts.append(now)
        if now < self.until:
            return SendResult.failure(
                self.target, 1.0, reason="503 unavailable", retryable=True, status_code=503
            )
        return SendResult.success(self.target, 1.0)


async def owe(state: StateStore, clock: FakeClock, **action: object) -> str:
    firing = Firing(str(uuid4()), "nightly", "triggered", clock.now(), {}, ["e1"], {})
    intent = Intent(firing.id, "nightly", 0, {"type": "notify", "channel": "team", **action})
    await state.commit_batch(
        processed=[], firings=[firing], intents=[intent], now=clock.now(), checkpoint=None
    )
    return intent.id


async def run_until_settled(dispatcher: Dispatcher, state: StateStore, clock: FakeClock) -> str:
    """Dispatch, then jump the clock to each retry, until the row is sent or dead."""
    for _ in range(50):
        await dispatcher.dispatch_due()
        [row] = await state.outbox()
        if row.status != "pending":
            return row.status
        assert row.next_attempt_at is not None
        await clock.set(row.next_attempt_at)
    raise AssertionError("never settled")


async def test_a_30_second_outage_does_not_lose_the_alert(state: StateStore) -> None:
    """A channel down for 30 s recovers before the default policy gives up (it used to
    dead-letter after 5 attempts in about 10 s)."""
    clock = FakeClock()
    start = clock.now()
    team = Outage(clock, start + 30 * S)
    await owe(state, clock)
    dispatcher = Dispatcher(state, {"team": team}, clock)
    assert await run_until_settled(dispatcher, state, clock) == "sent"
    assert team.attempts[-1] >= start + 30 * S
    assert len(team.attempts) == 4  # at once, immediately, ~5 s, ~5 min


async def test_a_delivery_that_dies_logs_one_line(state: StateStore) -> None:
    """``delivery_dead`` (warning) names the outbox row, automation, attempts and reason."""
    clock = FakeClock()
    team = Outage(clock, clock.now() + 365 * 24 * H)
    outbox_id = await owe(state, clock, retry={"max_attempts": 3, "backoff": "PT1S"})
    dispatcher = Dispatcher(state, {"team": team}, clock)
    with capture_logs() as logs:
        assert await run_until_settled(dispatcher, state, clock) == "dead"
    dead = [entry for entry in logs if entry["event"] == "delivery_dead"]
    assert dead == [
        {
            "event": "delivery_dead",
            "log_level": "warning",
            "outbox": outbox_id,
            "automation": "nightly",
            "action": "notify",
            "attempts": 3,
            "target": "outage://team",
            "reason": "503 unavailable",
        }
    ]
