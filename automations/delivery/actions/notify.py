"""``notify``: render a message and send it to a channel (a Slack resolve replies in thread).

No subject/body: ``notifiers.default_message`` says what happened, where and
since when, with the structured attributes Slack lays out. A resolved firing's
notify to a channel that can resolve (Slack bot mode) finds the ``ref`` the
triggered firing's delivery stored and calls ``resolve(ref, message)``: the
original alert is updated and the resolve is posted in its thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from automations.delivery.actions.base import Job, Runtime
from automations.spec import NotifyAction
from notifiers import Message, SendResult, TemplateError, default_message, render

__all__ = ["Resolvable", "execute", "prepare", "render_message"]


@runtime_checkable
class Resolvable(Protocol):
    """A channel that can say an alert it sent has cleared (``SlackNotifier``)."""

    async def resolve(
        self, ref: Mapping[str, str] | None, message: Message, *, idempotency_key: str
    ) -> SendResult: ...


def render_message(action: NotifyAction, context: Mapping[str, Any], *, resolved: bool) -> Message:
    """The message for ``action``: its templates over the default message; raises TemplateError.

    Blocking (templates run with a time limit): call it from a worker thread.
    """
    default = default_message(context)
    attributes = dict(default.attributes)
    subject = render(action.subject, context) if action.subject else default.subject
    body = default.body
    if action.body:
        body = render(action.body, context)
        attributes.pop("summary", None)  # Slack shows the summary instead of the body
    if resolved:
        attributes["resolved"] = "true"
    return Message(subject=subject, body=body, format=default.format, attributes=attributes)


def prepare(action: NotifyAction, job: Job) -> Message | Exception:
    """Blocking: ``job``'s message, or the exception rendering it raised (for ``prepared``)."""
    try:
        return render_message(action, job.context, resolved=job.firing.state == "resolved")
    except Exception as exc:
        return exc


async def execute(action: NotifyAction, job: Job, runtime: Runtime) -> SendResult:
    """Send once to ``action.channel``; a template error fails this action only."""
    channel = runtime.channels.get(action.channel)
    if channel is None:
        return SendResult.failed("-", f"unknown channel {action.channel!r}")
    resolved = job.firing.state == "resolved"
    try:
        if isinstance(job.prepared, Message | Exception):
            if isinstance(job.prepared, Exception):
                raise job.prepared
            message = job.prepared
        else:
            # Rendering is CPU work with its own time limit: keep it off the loop.
            message = await asyncio.to_thread(
                render_message, action, job.context, resolved=resolved
            )
    except TemplateError as exc:
        return SendResult.failed(channel.target, f"template: {exc}")
    if resolved and isinstance(channel, Resolvable):
        ref = await _original_ref(job, runtime, action.channel)
        result = await channel.resolve(ref, message, idempotency_key=job.key)
    else:
        result = await channel.send(message, idempotency_key=job.key)
    return result


async def _original_ref(job: Job, runtime: Runtime, channel: str) -> dict[str, str] | None:
    """The ref stored by the triggered firing's notify to the same channel, if any."""
    triggered_id = job.firing.context.get("resolves")
    if isinstance(triggered_id, str):
        return await runtime.state.delivered_ref(triggered_id, channel)
    triggered = await runtime.state.triggered_before(job.firing)
    if triggered is None:
        return None
    return await runtime.state.delivered_ref(triggered.id, channel)
