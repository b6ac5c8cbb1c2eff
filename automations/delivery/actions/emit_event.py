"""``emit-event``: publish an event built from templates (JSON types kept).

The event id is derived from the outbox id and the attempt series, so a
redelivered intent publishes the same id, which ingestion ignores: one event.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from pydantic import ValidationError

from automations.delivery.actions.base import Job, Runtime
from automations.spec import EmitEventAction
from events.model import Event
from notifiers import SendResult, TemplateError, render_json

__all__ = ["execute"]

_NS = uuid5(NAMESPACE_URL, "https://runbell.dev/emit-event")


def _labels(value: Any) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in dict(value).items()}


async def execute(action: EmitEventAction, job: Job, runtime: Runtime) -> SendResult:
    """Render and publish the event; publishing failures are retryable."""
    if runtime.emit is None:
        return SendResult.failed("-", "emit-event needs an event publisher; none is wired")
    try:
        fields = {
            "event": action.event,
            "resource": action.resource,
            "related": action.related,
            "payload": action.payload,
        }
        rendered = await asyncio.to_thread(render_json, fields, job.context)
        name, resource, related, payload = (rendered[key] for key in fields)
        event = Event(
            id=uuid5(_NS, f"{job.row.id}\x1f{job.row.series}"),
            occurred=runtime.clock.now(),
            event=str(name),
            resource=_labels(resource),
            related=[_labels(r) for r in related],
            payload=payload,
        )
    except TemplateError as exc:
        return SendResult.failed("-", f"template: {exc}")
    except (ValidationError, ValueError) as exc:
        return SendResult.failed("-", f"the rendered event is invalid: {exc}")
    target = f"event {event.event}"
    try:
        await runtime.emit([event])
    except Exception as exc:  # the bus or store said no: worth another attempt
        return SendResult.failed(target, f"publish failed ({type(exc).__name__})", retryable=True)
    return SendResult.done(target, f"emitted {event.id}", ref={"event_id": str(event.id)})
