"""``do-nothing``: the firing is recorded and its action events emitted; nothing else."""

from __future__ import annotations

from automations.delivery.actions.base import Job, Runtime
from automations.spec import DoNothingAction
from notifiers import SendResult

__all__ = ["execute"]


async def execute(action: DoNothingAction, job: Job, runtime: Runtime) -> SendResult:
    """Succeed at once."""
    return SendResult.done("-", "nothing to do")
