"""``change-run-state``: propose a new state for the run (``force`` skips the rules)."""

from __future__ import annotations

import asyncio

from automations.actions import _orchestrated
from automations.actions.base import ActionResult, Job, RunController, Runtime
from automations.orchestrators.base import ControlResult
from automations.spec import ChangeRunStateAction
from notifiers import TemplateError, render_json

__all__ = ["execute"]


async def execute(action: ChangeRunStateAction, job: Job, runtime: Runtime) -> ActionResult:
    """One state proposal; ``name``/``message`` are templates."""
    try:
        rendered = await asyncio.to_thread(
            render_json, {"name": action.name, "message": action.message}, job.context
        )
        name, message = rendered["name"], rendered["message"]
    except TemplateError as exc:
        return ActionResult.failed("-", f"template: {exc}")

    async def act(controller: RunController, run_id: str) -> ControlResult:
        return await controller.change_run_state(
            run_id,
            state_type=action.state,
            name=None if name is None else str(name),
            message=None if message is None else str(message),
            force=action.force,
            idempotency_key=job.key,
        )

    return await _orchestrated.call(job, runtime, action.orchestrator, action.run_id, "run id", act)
