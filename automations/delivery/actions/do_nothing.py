"""``do-nothing``: the firing is recorded and its action events emitted; nothing else."""

from __future__ import annotations

from automations.delivery.actions.base import ActionResult, Job, Runtime
from automations.spec import DoNothingAction

__all__ = ["execute"]


async def execute(action: DoNothingAction, job: Job, runtime: Runtime) -> ActionResult:
    """Succeed at once."""
    return ActionResult.done("-", "nothing to do")
