"""The dispatcher on a fake clock: delivery, retry policy, dead letters, claims."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import uuid4

from automations.delivery.channels import TokenBucket
from automations.delivery.dispatcher import Dispatcher, RetryPolicy
from automations.spec import RateLimit
from automations.state import Firing, Intent, StateStore
from automations.state.model import as_read
from events.model import Event
from events.testing import FakeClock
from notifiers import Message, SendResult
from notifiers.testing import RecordingNotifier

POLICY = RetryPolicy(
    max_attempts=3,
    base_delay=timedelta(seconds=2),
    max_delay=timedelta(seconds=60),
    max_age=timedelta(hours=1),
)


EVENT = {"event": "flow-run.Failed", "resource": {"resource.id": "flow-run.1"}}


async def owe(
    state: StateStore,
    clock: FakeClock,
    *,
    firing_state: str = "triggered",
    bucket: dict[str, str] | None = None,
    event: dict[str, Any] | None = None,
    **action: object,
) -> str:
    """Record one firing with one action intent (notify to 'team' by default); its outbox id."""
    firing = Firing(
        id=str(uuid4()),
        automation="a",
        state=firing_state,
        at=clock.now(),
        bucket=bucket or {},
        event_ids=["e1"],
        context={"event": event or EVENT},
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


async def test_template_error_sends_the_default_message(state: StateStore) -> None:
    """A notify template that fails to render sends the default message instead (issue 11:
    an alert is never lost to its template), saying so in the attempt; others go out as written."""
    clock, team = FakeClock(), RecordingNotifier()
    broken = await owe(state, clock, subject="{{ 1 / 0 }}")
    await owe(state, clock, subject="fine")
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    assert await dispatcher.dispatch_due() == 2
    assert sorted(m.subject for m in team.messages) == ["Flow run 'flow-run.1' failed", "fine"]
    assert await state.outbox(status="dead") == []
    [attempt] = await state.attempts(broken)
    assert attempt.reason.startswith("template failed (subject: render failed: ZeroDivisionError")


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


async def test_per_action_retry_policy_overrides_the_default(state: StateStore) -> None:
    """An action's retry: {max_attempts, backoff} replaces the dispatcher's defaults."""
    clock, team = FakeClock(), RecordingNotifier()
    team.fail("500", status_code=500)
    team.fail("502", status_code=502)
    await owe(state, clock, retry={"max_attempts": 2, "backoff": "PT10S"})
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    await dispatcher.dispatch_due()
    [row] = await state.outbox()
    assert timedelta(seconds=5) <= row.next_attempt_at - clock.now() <= timedelta(seconds=10)
    await clock.advance(timedelta(seconds=10))
    await dispatcher.dispatch_due()
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("dead", 2)


async def test_max_age_dead_letters_a_retryable_failure(state: StateStore) -> None:
    """Past the action's max_age a retryable failure is not retried."""
    clock, team = FakeClock(), RecordingNotifier()
    await owe(state, clock, retry={"max_age": "PT1M"})
    await clock.advance(timedelta(minutes=2))
    team.fail("503", status_code=503)
    await Dispatcher(state, {"team": team}, clock, policy=POLICY).dispatch_due()
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("dead", 1)


async def test_dead_notify_hands_the_message_to_its_fallback(state: StateStore) -> None:
    """After exhaustion the row is dead-lettered and the fallback channel gets the message."""
    clock, team, pager = FakeClock(), RecordingNotifier(), RecordingNotifier("recording://pager")
    team.fail("403 forbidden", retryable=False, status_code=403)
    outbox_id = await owe(state, clock, subject="s", fallback="pager")
    dispatcher = Dispatcher(state, {"team": team, "pager": pager}, clock, policy=POLICY)
    assert await dispatcher.dispatch_due() == 1
    assert await dispatcher.dispatch_due() == 1  # the fallback intent
    assert await dispatcher.dispatch_due() == 0
    assert [m.subject for m in pager.messages] == ["s"]
    assert [s.idempotency_key for s in pager.sent] == [f"{outbox_id}:fallback"]
    statuses = {row.id: row.status for row in await state.outbox()}
    assert statuses == {outbox_id: "dead", f"{outbox_id}:fallback": "sent"}


async def test_a_dead_fallback_does_not_fall_back_again(state: StateStore) -> None:
    """The fallback intent has no fallback of its own: no endless chain."""
    clock, team = FakeClock(), RecordingNotifier()
    team.fail("404", retryable=False)
    team.fail("404", retryable=False)
    await owe(state, clock, fallback="team")
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    await dispatcher.dispatch_due()
    await dispatcher.dispatch_due()
    assert await dispatcher.dispatch_due() == 0
    assert {row.status for row in await state.outbox()} == {"dead"}
    assert len(await state.outbox()) == 2


async def test_rate_limit_delays_and_never_drops(state: StateStore) -> None:
    """'2/m' sends two at once, defers the third to when a token is earned, drops none."""
    clock, team = FakeClock(), RecordingNotifier()
    for _ in range(3):
        await owe(state, clock)
    bucket = TokenBucket(RateLimit(count=2, per=timedelta(minutes=1)))
    dispatcher = Dispatcher(
        state, {"team": team}, clock, policy=POLICY, rate_limits={"team": bucket}
    )
    assert await dispatcher.dispatch_due() == 3
    assert len(team.sent) == 2
    [waiting] = await state.outbox(status="pending")
    assert waiting.attempts == 0  # a deferral is not an attempt
    assert waiting.next_attempt_at == clock.now() + timedelta(seconds=30)
    await clock.advance(timedelta(seconds=29))
    assert await dispatcher.dispatch_due() == 0
    await clock.advance(timedelta(seconds=1))
    assert await dispatcher.dispatch_due() == 1
    assert len(team.sent) == 3
    assert {row.status for row in await state.outbox()} == {"sent"}


class ThreadedNotifier(RecordingNotifier):
    """A Slack-bot-like fake: send returns a ref, resolve records the ref it was given."""

    def __init__(self) -> None:
        super().__init__("slack bot fake")
        self.resolved: list[tuple[dict[str, str] | None, Message]] = []

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        await super().send(message, idempotency_key=idempotency_key)
        return SendResult.success(self.target, 1.0, ref={"channel": "C1", "ts": "171.5"})

    async def resolve(
        self, ref: Mapping[str, str] | None, message: Message, *, idempotency_key: str
    ) -> SendResult:
        self.resolved.append((dict(ref) if ref else None, message))
        return SendResult.success(self.target, 1.0, ref={"channel": "C1", "ts": "172.0"})


async def test_resolved_firing_replies_in_the_thread_of_the_original(state: StateStore) -> None:
    """The triggered send's ref is stored; the resolved notify calls resolve(ref) with it."""
    clock, slack = FakeClock(), ThreadedNotifier()
    dispatcher = Dispatcher(state, {"team": slack}, clock, policy=POLICY)
    first = await owe(state, clock, bucket={"flow": "etl"})
    await dispatcher.dispatch_due()
    [row] = await state.outbox()
    assert row.ref == {"channel": "C1", "ts": "171.5"}
    await clock.advance(timedelta(minutes=5))
    await owe(state, clock, bucket={"flow": "etl"}, firing_state="resolved")
    await dispatcher.dispatch_due()
    [(ref, message)] = slack.resolved
    assert ref == {"channel": "C1", "ts": "171.5"}
    assert message.attributes["resolved"] == "true"
    assert [s.idempotency_key for s in slack.sent] == [first]


async def test_resolve_without_an_original_has_no_ref(state: StateStore) -> None:
    """A resolved firing whose bucket never alerted on this channel resolves with no ref."""
    clock, slack = FakeClock(), ThreadedNotifier()
    await owe(state, clock, bucket={"flow": "other"}, firing_state="resolved")
    await Dispatcher(state, {"team": slack}, clock, policy=POLICY).dispatch_due()
    assert [ref for ref, _ in slack.resolved] == [None]


async def test_a_redelivered_firing_never_sends_twice(state: StateStore) -> None:
    """The same firing and intents committed twice (a redelivered batch) send once."""
    clock, team = FakeClock(), RecordingNotifier()
    firing = Firing(str(uuid4()), "a", "triggered", clock.now(), {}, ["e1"], {"event": EVENT})
    intent = Intent(firing.id, "a", 0, {"type": "notify", "channel": "team"})
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    for _ in range(2):
        await state.commit_batch(
            processed=[], firings=[firing], intents=[intent], now=clock.now(), checkpoint=None
        )
        await dispatcher.dispatch_due()
    assert [s.idempotency_key for s in team.sent] == [intent.id]


async def test_templates_see_run_flow_and_deployment(state: StateStore) -> None:
    """run/flow/deployment come from the event's resources, ids without their kind prefix."""
    clock, team = FakeClock(), RecordingNotifier()
    event = {
        "event": "flow-run.Failed",
        "resource": {"resource.id": "flow-run.r1", "resource.name": "daft-wallaby"},
        "related": [
            {"resource.id": "flow.f1", "resource.role": "flow", "resource.name": "etl"},
            {
                "resource.id": "deployment.d1",
                "resource.role": "deployment",
                "resource.name": "nightly",
            },
        ],
    }
    body = "{{ run.id }} {{ run.name }} {{ flow.id }} {{ flow.name }} {{ deployment.name }}"
    await owe(state, clock, event=event, subject="{{ run.id | ui_url }}", body=body)
    dispatcher = Dispatcher(
        state, {"team": team}, clock, policy=POLICY, ui_base_url="https://ui.example"
    )
    await dispatcher.dispatch_due()
    [message] = team.messages
    assert message.body == "r1 daft-wallaby f1 etl nightly"
    assert message.subject == "https://ui.example/resources/r1"


async def test_every_action_emits_triggered_then_executed_or_failed(state: StateStore) -> None:
    """Action events name the automation, the triggering event and the firing."""
    clock, team = FakeClock(), RecordingNotifier()
    emitted: list[Event] = []

    async def emit(events: Sequence[Event]) -> None:
        emitted.extend(events)

    ok_id = await owe(state, clock)
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY, emit=emit)
    await dispatcher.dispatch_due()
    team.fail("404", retryable=False, status_code=404)
    failing_id = await owe(state, clock)
    await dispatcher.dispatch_due()
    by_delivery = {(e.payload["delivery_id"], e.event) for e in emitted}
    assert by_delivery == {
        (ok_id, "automation.action.triggered"),
        (ok_id, "automation.action.executed"),
        (failing_id, "automation.action.triggered"),
        (failing_id, "automation.action.failed"),
    }
    executed = next(e for e in emitted if e.event == "automation.action.executed")
    assert executed.resource["resource.id"] == "automation.a"
    roles = {r["resource.role"]: r["resource.id"] for r in executed.related}
    assert roles["triggering-event"] == "event.e1"
    assert roles["firing"].startswith("firing.")
    failed = next(e for e in emitted if e.event == "automation.action.failed")
    assert failed.payload["reason"] == "404"


async def test_a_claim_reads_rows_and_firings_as_the_orm_does(state: StateStore) -> None:
    """The claim (driver SQL on SQLite) gives the same values as SQLAlchemy's typed read:
    JSON actions and contexts, aware UTC times, the lease and the attempt count."""
    clock = FakeClock()
    event = {**EVENT, "payload": {"n": 1.5, "ok": True, "text": "ünïcode ✓", "none": None}}
    outbox_id = await owe(state, clock, bucket={"resource.id": "flow-run.1"}, event=event, x=[1])
    lease = clock.now() + timedelta(seconds=60)
    claimed, firings = await state.claim_due_with_firings(clock.now(), lease, 10)
    [row] = claimed
    [stored] = await state.outbox()
    assert row.model_dump() == stored.model_dump()
    assert (row.id, row.status, row.attempts, row.next_attempt_at) == (
        outbox_id,
        "sending",
        1,
        lease,
    )
    assert row.created_at.tzinfo is not None and row.created_at == clock.now()
    assert firings == await state.firings_by_id([row.firing_id])
    assert firings[row.firing_id].context["event"]["payload"] == event["payload"]
    assert await state.claim_due_with_firings(clock.now(), lease, 10) == ([], {})


async def test_a_claim_takes_the_firings_the_engine_handed_over_as_they_read_back(
    state: StateStore,
) -> None:
    """A firing the engine committed (context with ``events``) is used as handed to
    ``Dispatcher.committed``, equal to what the claim would read; others are read."""
    clock = FakeClock()
    handed = Firing(
        id=str(uuid4()),
        automation="a",
        state="triggered",
        at=clock.now(),
        bucket={"resource.id": "flow-run.1"},
        event_ids=["e1"],
        context={"muted": None, "automation": {"name": "a"}, "events": [EVENT], "trigger": "t"},
    )
    intent = Intent(handed.id, "a", 0, {"type": "notify", "channel": "team"})
    await state.commit_batch(
        processed=[], firings=[handed], intents=[intent], now=clock.now(), checkpoint=None
    )
    other_id = await owe(state, clock)
    known = {handed.id: as_read(handed)}
    lease = clock.now() + timedelta(seconds=60)
    claimed, firings = await state.claim_due_with_firings(clock.now(), lease, 10, known)
    assert {row.id for row in claimed} == {intent.id, other_id}
    assert firings[handed.id] is known[handed.id]
    assert firings == await state.firings_by_id([row.firing_id for row in claimed])
    assert firings[handed.id].context["event"] == EVENT


async def test_the_dispatcher_delivers_a_handed_over_firing_once(state: StateStore) -> None:
    """``committed`` (the engine's hook) wakes the loop; the row is sent with the firing."""
    clock, team = FakeClock(), RecordingNotifier()
    handed = Firing(
        id=str(uuid4()),
        automation="a",
        state="triggered",
        at=clock.now(),
        bucket={},
        event_ids=["e1"],
        context={"events": [EVENT]},
    )
    action = {"type": "notify", "channel": "team", "body": "{{ event.event }}"}
    intent = Intent(handed.id, "a", 0, action)
    await state.commit_batch(
        processed=[], firings=[handed], intents=[intent], now=clock.now(), checkpoint=None
    )
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    dispatcher.committed([handed])
    assert await dispatcher.dispatch_due() == 1
    assert [s.message.body for s in team.sent] == ["flow-run.Failed"]
    assert dispatcher._committed == {}
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("sent", 1)


async def test_an_action_that_no_longer_validates_is_dead_lettered_with_its_reason(
    state: StateStore,
) -> None:
    """A stored action the spec no longer accepts (an unknown type, a field that changed)
    fails once, not retryable, with the validation's reason; the rest is delivered."""
    clock, team = FakeClock(), RecordingNotifier()
    emitted: list[Event] = []

    async def emit(events: Sequence[Event]) -> None:
        emitted.extend(events)

    firing = Firing(
        id=str(uuid4()),
        automation="a",
        state="triggered",
        at=clock.now(),
        bucket={},
        event_ids=["e1"],
        context={"event": EVENT},
    )
    intents = [
        Intent(firing.id, "a", 0, {"type": "page-oncall", "who": "ops"}),
        Intent(firing.id, "a", 1, {"type": "notify", "channel": "team", "group_wait": "soon"}),
        Intent(firing.id, "a", 2, {"type": "notify", "channel": "team"}),
    ]
    await state.commit_batch(
        processed=[], firings=[firing], intents=intents, now=clock.now(), checkpoint=None
    )
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY, emit=emit)
    assert await dispatcher.dispatch_due() == 3
    rows = {row.action_index: row for row in await state.outbox()}
    assert [(rows[i].status, rows[i].attempts) for i in range(3)] == [
        ("dead", 1),
        ("dead", 1),
        ("sent", 1),
    ]
    assert (rows[0].last_error or "").startswith("invalid action: ")
    assert "page-oncall" in (rows[0].last_error or "")
    assert (rows[1].last_error or "").startswith("invalid action: notify.group_wait")
    assert [s.idempotency_key for s in team.sent] == [intents[2].id]
    failed = {e.payload["delivery_id"]: e for e in emitted if e.event.endswith(".failed")}
    assert failed[intents[0].id].payload["action_type"] == "page-oncall"
    assert failed[intents[1].id].payload["action_type"] == "notify"
    assert await dispatcher.dispatch_due() == 0  # dead: not owed again
