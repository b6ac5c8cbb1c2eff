"""An alert is never lost to its template: a notify whose template fails or renders blank
sends the default message, and the attempt says so (issue 11 points 2 and 3)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from automations.delivery.dispatcher import Dispatcher, RetryPolicy
from automations.state import StateStore
from events.testing import FakeClock
from notifiers import AppriseNotifier, Message
from notifiers.testing import RecordingNotifier
from tests.automations.test_dispatcher import owe

pytestmark = pytest.mark.timeout(30)

POLICY = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=1), max_age=timedelta(hours=1))
DEFAULT_SUBJECT = "Flow run 'flow-run.1' failed"


async def _deliver_until_settled(dispatcher: Dispatcher, clock: FakeClock) -> None:
    for _ in range(POLICY.max_attempts + 1):
        await dispatcher.dispatch_due()
        await clock.advance(timedelta(minutes=5))


async def test_an_empty_body_sends_the_default_message_instead(state: StateStore) -> None:
    """The README's body for a run without a state message renders empty: Apprise refuses an
    empty body, which was retried as retryable until dead; now the default message goes, once."""
    clock = FakeClock()
    # A real Apprise channel; port 9 is never reached if the message is refused first.
    channel = AppriseNotifier("json://127.0.0.1:9/hook", timeout=2)
    await owe(state, clock, body="{{ event.resource['state-message'] }}")
    dispatcher = Dispatcher(state, {"team": channel}, clock, policy=POLICY)
    await _deliver_until_settled(dispatcher, clock)
    [row] = await state.outbox()
    attempts = await state.attempts(row.id)
    # The default message was offered to the channel (which then failed to connect,
    # retryably): the reason says the template was replaced, and why.
    assert "body rendered empty" in attempts[0].reason
    assert "sent the default message" in attempts[0].reason
    assert "No message body" not in attempts[0].reason


async def test_a_blank_body_falls_back_and_is_delivered(state: StateStore) -> None:
    """A body rendering blank sends the event family's default message; the record says so."""
    clock, team = FakeClock(), RecordingNotifier()
    outbox_id = await owe(state, clock, body="  {{ event.resource['state-message'] }}\n")
    await Dispatcher(state, {"team": team}, clock, policy=POLICY).dispatch_due()
    [message] = team.messages
    assert message.subject == DEFAULT_SUBJECT
    assert message.body.startswith(DEFAULT_SUBJECT)
    [row] = await state.outbox()
    assert (row.status, row.attempts) == ("sent", 1)
    [attempt] = await state.attempts(outbox_id)
    assert attempt.ok
    assert attempt.reason == (
        "template failed (body rendered empty); sent the default message: delivered"
    )


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ({"subject": "{{ evnt.id }}"}, "subject: undefined: 'evnt' is undefined"),
        ({"body": "{{ 1 / 0 }}"}, "body: render failed: ZeroDivisionError"),
        ({"body": "{{ ((10 ** 999) ** 999) ** 999 }}"}, "body: sandbox violation: '**'"),
        ({"body": "{{ 'x' | center(1500000000) }}"}, "body: sandbox violation: center width"),
        ({"subject": "ok", "body": "{{ '' }}"}, "body rendered empty"),
    ],
)
async def test_a_failing_template_sends_the_default_message(
    state: StateStore, template: dict[str, Any], why: str
) -> None:
    """Undefined names, errors and sandbox bounds fall back to the default message, fast."""
    clock, team = FakeClock(), RecordingNotifier()
    outbox_id = await owe(state, clock, **template)
    started = time.monotonic()
    await Dispatcher(state, {"team": team}, clock, policy=POLICY).dispatch_due()
    assert time.monotonic() - started < 5
    [message] = team.messages
    assert message.subject == DEFAULT_SUBJECT
    [attempt] = await state.attempts(outbox_id)
    assert attempt.ok
    assert attempt.reason.startswith(f"template failed ({why}")
    assert attempt.reason.endswith("; sent the default message: delivered")


async def test_the_fallback_note_stays_on_a_failed_send(state: StateStore) -> None:
    """When the default message's send fails too, the retry policy decides as usual and the
    reason still says the template was replaced."""
    clock, team = FakeClock(), RecordingNotifier()
    team.fail("503", status_code=503)
    outbox_id = await owe(state, clock, body="{{ 1 / 0 }}")
    dispatcher = Dispatcher(state, {"team": team}, clock, policy=POLICY)
    await dispatcher.dispatch_due()
    [row] = await state.outbox()
    assert row.status == "pending"
    [attempt] = await state.attempts(outbox_id)
    assert not attempt.ok and attempt.retryable
    assert attempt.reason.endswith("sent the default message: 503")


async def test_a_resolved_firing_falls_back_with_the_resolved_flag(state: StateStore) -> None:
    """The default message of a resolved firing's fallback still says resolved."""
    clock, team = FakeClock(), RecordingNotifier()
    await owe(state, clock, firing_state="resolved", body="{{ nope }}")
    await Dispatcher(state, {"team": team}, clock, policy=POLICY).dispatch_due()
    [message] = team.messages
    assert isinstance(message, Message)
    assert message.attributes.get("resolved") == "true"
