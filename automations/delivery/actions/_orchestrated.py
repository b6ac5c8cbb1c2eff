"""Shared by the run actions: pick the orchestrator, render the run id, translate results."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from automations.delivery.actions.base import Job, RunController, Runtime
from automations.spec import CancelRunAction, RetryRunAction
from notifiers import SendResult, TemplateError, render_json


def _render(
    template: str, extra: Mapping[str, Any], context: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], Any]:
    """``extra`` rendered (raises TemplateError), and the id or the TemplateError it raised."""
    extras = render_json(dict(extra), context) if extra else {}
    try:
        return extras, render_json(template, context, where=where)
    except TemplateError as exc:
        return extras, exc


async def call(
    job: Job,
    runtime: Runtime,
    orchestrator: str | None,
    template: str,
    what: str,
    act: Callable[[RunController, str, dict[str, Any]], Awaitable[SendResult]],
    extra: Mapping[str, Any] | None = None,
) -> SendResult:
    """Render ``template`` (a run or deployment id) and ``extra`` (the action's other
    templates, handed to ``act`` rendered) in one worker-thread hop, then call ``act``
    on the orchestrator. A template error in ``extra`` fails before the orchestrator
    is looked up; one in the id after."""
    where = what.replace(" ", "_")
    try:
        extras, value = await asyncio.to_thread(_render, template, extra or {}, job.context, where)
    except TemplateError as exc:
        return SendResult.failed("-", f"template: {exc}")
    controller = runtime.controller(orchestrator)
    if isinstance(controller, str):
        return SendResult.failed("-", controller)
    if isinstance(value, TemplateError):
        return SendResult.failed(controller.target, f"template: {value}")
    if value is None or not str(value).strip():
        return SendResult.failed(
            controller.target, f"no {what} for this event: set it in the action"
        )
    return await act(controller, str(value), extras)


async def on_run(
    action: RetryRunAction | CancelRunAction,
    job: Job,
    runtime: Runtime,
    act: Callable[[RunController, str], Awaitable[SendResult]],
) -> SendResult:
    """``call`` for an action on the run ``action.run_id`` renders to."""
    return await call(
        job,
        runtime,
        action.orchestrator,
        action.run_id,
        "run id",
        lambda controller, run_id, _: act(controller, run_id),
    )
