"""``automation.action.triggered`` / ``.executed`` / ``.failed``: every action's trail.

Each event's resource is ``automation.<name>``; related resources are the
triggering event (role ``triggering-event``, ``event.<id>``), the firing (role
``firing``, ``firing.<id>``) and, for a run an action created, the run (role
``flow-run``). So ``GET /api/events?resource_id=automation.<name>`` follows
event → firing → action → new run. Ids are deterministic per (outbox row,
attempt series, kind, attempt): a redelivered attempt re-emits the same ids, which
ingestion ignores.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import NAMESPACE_URL, uuid5

from automations.state import Firing, OutboxRow
from events.model import Event
from notifiers import SendResult

__all__ = ["action_event"]

_NS = uuid5(NAMESPACE_URL, "https://runbell.dev/action-event")

Kind = Literal["triggered", "executed", "failed"]

MAX_REASON = 2000  # as the attempt records it: the event stays far below MAX_EVENT_BYTES


def action_event(
    kind: Kind,
    *,
    row: OutboxRow,
    firing: Firing | None,
    action_type: str,
    at: datetime,
    result: SendResult | None = None,
) -> Event:
    """One lifecycle event of the action in ``row``."""
    related = []
    if firing is not None and firing.event_ids:
        related.append(
            {"resource.id": f"event.{firing.event_ids[0]}", "resource.role": "triggering-event"}
        )
    related.append({"resource.id": f"firing.{row.firing_id}", "resource.role": "firing"})
    payload: dict[str, Any] = {
        "delivery_id": row.id,
        "action_index": row.action_index,
        "action_type": action_type,
        "attempt": row.attempts,
        "firing_state": firing.state if firing else None,
    }
    if result is not None:
        payload.update(
            reason=result.reason[:MAX_REASON],
            target=result.target,
            status_code=result.status_code,
            latency_ms=round(result.latency_ms, 1),
        )
        if result.created_id:
            payload["created_id"] = result.created_id
            related.append(
                {"resource.id": f"flow-run.{result.created_id}", "resource.role": "flow-run"}
            )
    attempt = row.attempts if kind != "triggered" else 0
    # Built by runbell from values of known types, within the model's bounds (an aware
    # ``at``, string labels with a resource id and roles, two or three related
    # resources, a reason cut to MAX_REASON): constructed without re-validation, one of
    # the dispatcher's costs per delivery. tests/automations/test_action_events.py checks
    # that validation accepts and reproduces it.
    return Event.model_construct(
        id=uuid5(_NS, f"{row.id}\x1f{row.series}\x1f{kind}\x1f{attempt}"),
        occurred=at,
        event=f"automation.action.{kind}",
        resource={
            "resource.id": f"automation.{row.automation}",
            "resource.name": row.automation,
            "action-type": action_type,
        },
        related=related,
        payload=payload,
        follows=None,
        received=None,
        origin=None,
    )
