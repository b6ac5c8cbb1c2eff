"""The trail events the dispatcher builds without validation are valid events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from automations.delivery.actions import action_event
from automations.delivery.actions.events import MAX_REASON, Kind
from automations.state import Firing, OutboxRow
from events.model import Event
from notifiers import SendResult

AT = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)


def _row(attempts: int) -> OutboxRow:
    return OutboxRow(
        id="f1:0",
        firing_id="f1",
        automation="page-on-failure",
        action_index=0,
        action={"type": "run-deployment"},
        status="sending",
        attempts=attempts,
        created_at=AT,
        next_attempt_at=AT,
        series=2,
    )


FIRING = Firing(
    id="f1",
    automation="page-on-failure",
    state="Triggered",
    at=AT,
    bucket={},
    event_ids=["7c0d8c4e-4f4b-4a51-9a8e-2d1c6f2f7b10"],
    context={},
)


@pytest.mark.parametrize(
    ("kind", "result", "firing"),
    [
        ("triggered", None, FIRING),
        ("triggered", None, None),
        (
            "executed",
            SendResult.done("https://h/***", created_id="run-1", latency_ms=3.14159),
            FIRING,
        ),
        ("failed", SendResult.failed("https://h/***", "x" * 50_000, retryable=True), FIRING),
    ],
)
def test_trail_event_equals_its_validated_form(
    kind: Kind, result: SendResult | None, firing: Firing | None
) -> None:
    event = action_event(
        kind, row=_row(3), firing=firing, action_type="run-deployment", at=AT, result=result
    )
    validated = Event.model_validate(event.model_dump())
    assert validated == event
    assert Event.model_validate_json(event.to_json()) == event
    assert Event.model_validate_json(event.with_received(AT).to_json()).received == AT
    if result is not None:
        assert len(event.payload["reason"]) <= MAX_REASON
        assert event.payload["reason"] == result.reason[:MAX_REASON]
