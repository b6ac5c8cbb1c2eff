"""``change-run-state``: propose a new state for the run (``force`` skips the rules)."""

from __future__ import annotations

from typing import Any

from automations.delivery.actions import _orchestrated
from automations.delivery.actions.base import Job, RunController, Runtime
from automations.spec import ChangeRunStateAction
from notifiers import SendResult

__all__ = ["execute"]


async def execute(action: ChangeRunStateAction, job: Job, runtime: Runtime) -> SendResult:
    """One state proposal; ``name``/``message`` are templates."""

    async def act(controller: RunController, run_id: str, rendered: dict[str, Any]) -> SendResult:
        name, message = rendered["name"], rendered["message"]
        return await controller.change_run_state(
            run_id,
            state_type=action.state,
            name=None if name is None else str(name),
            message=None if message is None else str(message),
            force=action.force,
            idempotency_key=job.key,
        )

    templates = {"name": action.name, "message": action.message}
    return await _orchestrated.call(
        job, runtime, action.orchestrator, action.run_id, "run id", act, templates
    )
