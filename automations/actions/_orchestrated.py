"""Shared by the run actions: pick the orchestrator, render the run id, translate results."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from automations.actions.base import ActionResult, Job, RunController, Runtime
from automations.orchestrators.base import ControlResult
from automations.spec import CancelRunAction, RetryRunAction
from notifiers import TemplateError, render_json


async def call(
    job: Job,
    runtime: Runtime,
    orchestrator: str | None,
    template: str,
    what: str,
    act: Callable[[RunController, str], Awaitable[ControlResult]],
) -> ActionResult:
    """Render ``template`` (a run or deployment id) and call ``act`` on the orchestrator."""
    controller = runtime.controller(orchestrator)
    if isinstance(controller, str):
        return ActionResult.failed("-", controller)
    try:
        value = await asyncio.to_thread(
            render_json, template, job.context, where=what.replace(" ", "_")
        )
    except TemplateError as exc:
        return ActionResult.failed(controller.target, f"template: {exc}")
    if value is None or not str(value).strip():
        return ActionResult.failed(
            controller.target, f"no {what} for this event: set it in the action"
        )
    return ActionResult.of(await act(controller, str(value)))


async def on_run(
    action: RetryRunAction | CancelRunAction,
    job: Job,
    runtime: Runtime,
    act: Callable[[RunController, str], Awaitable[ControlResult]],
) -> ActionResult:
    """``call`` for an action on the run ``action.run_id`` renders to."""
    return await call(job, runtime, action.orchestrator, action.run_id, "run id", act)
