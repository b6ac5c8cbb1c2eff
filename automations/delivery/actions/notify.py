"""``notify``: render a message and send it to a channel (a Slack resolve replies in thread).

No subject/body: ``notifiers.default_message`` says what happened, where and
since when, with the structured attributes Slack lays out. A subject or body
template that fails (undefined name, error, a sandbox bound) or renders blank
sends that default message instead, and the attempt's reason says so
(``template failed (body: ...); sent the default message: delivered``). A resolved firing's
notify to a channel that can resolve (Slack bot mode) finds the ``ref`` the
triggered firing's delivery stored and calls ``resolve(ref, message)``: the
original alert is updated and the resolve is posted in its thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from automations.delivery.actions.base import Job, Runtime
from automations.spec import NotifyAction
from notifiers import Message, SendResult, TemplateError, default_message, render_field

__all__ = [
    "Rendered",
    "Resolvable",
    "execute",
    "prepare",
    "render_message",
    "render_or_default",
    "with_fallback_note",
]


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
    subject = default.subject
    if action.subject:
        subject = render_field(action.subject, context, where="subject")
    body = default.body
    if action.body:
        body = render_field(action.body, context, where="body")
        attributes.pop("summary", None)  # Slack shows the summary instead of the body
    if resolved:
        attributes["resolved"] = "true"
    return Message(subject=subject, body=body, format=default.format, attributes=attributes)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notify's message, and why its templates were not used (None when they were)."""

    message: Message
    template_failed: str | None = None


def render_or_default(
    action: NotifyAction, context: Mapping[str, Any], *, resolved: bool
) -> Rendered:
    """``render_message``, or the event family's default message when a template fails
    or renders a blank subject or body: an alert is never lost to its template (a
    blank body is refused by channels, and retrying cannot change it). Blocking."""
    try:
        message = render_message(action, context, resolved=resolved)
    except TemplateError as exc:
        failed = str(exc)
    else:
        blank = [
            f
            for f, text in (("subject", message.subject), ("body", message.body))
            if not text.strip()
        ]
        if not blank:
            return Rendered(message)
        failed = f"{' and '.join(blank)} rendered empty"
    default = default_message(context)
    attributes = dict(default.attributes)
    if resolved:
        attributes["resolved"] = "true"
    return Rendered(
        Message(default.subject, default.body, format=default.format, attributes=attributes),
        failed,
    )


def with_fallback_note(result: SendResult, template_failed: str | None) -> SendResult:
    """``result`` whose reason says the default message went instead of the template's."""
    if template_failed is None:
        return result
    note = f"template failed ({template_failed}); sent the default message"
    return dataclasses.replace(result, reason=f"{note}: {result.reason}")


def prepare(action: NotifyAction, job: Job) -> Rendered | Exception:
    """Blocking: ``job``'s message, or the exception rendering it raised (for ``prepared``)."""
    try:
        return render_or_default(action, job.context, resolved=job.firing.state == "resolved")
    except Exception as exc:
        return exc


async def execute(action: NotifyAction, job: Job, runtime: Runtime) -> SendResult:
    """Send once to ``action.channel``; a failing template sends the default message."""
    channel = runtime.channels.get(action.channel)
    if channel is None:
        return SendResult.failed("-", f"unknown channel {action.channel!r}")
    resolved = job.firing.state == "resolved"
    if isinstance(job.prepared, Exception):
        raise job.prepared
    if isinstance(job.prepared, Rendered):
        rendered = job.prepared
    else:
        # Rendering is CPU work with its own time limit: keep it off the loop.
        rendered = await asyncio.to_thread(
            render_or_default, action, job.context, resolved=resolved
        )
    message = rendered.message
    if resolved and isinstance(channel, Resolvable):
        ref = await _original_ref(job, runtime, action.channel)
        result = await channel.resolve(ref, message, idempotency_key=job.key)
    else:
        result = await channel.send(message, idempotency_key=job.key)
    return with_fallback_note(result, rendered.template_failed)


async def _original_ref(job: Job, runtime: Runtime, channel: str) -> dict[str, str] | None:
    """The ref stored by the triggered firing's notify to the same channel, if any."""
    triggered_id = job.firing.context.get("resolves")
    if isinstance(triggered_id, str):
        return await runtime.state.delivered_ref(triggered_id, channel)
    triggered = await runtime.state.triggered_before(job.firing)
    if triggered is None:
        return None
    return await runtime.state.delivered_ref(triggered.id, channel)
