"""``cancel-run``: ask the orchestrator to cancel the run.

The outbox id is the idempotency key the orchestrator receives, so a redelivered
intent has its effect once.
"""

from __future__ import annotations

from automations.delivery.actions import _orchestrated
from automations.delivery.actions.base import Job, Runtime
from automations.spec import CancelRunAction
from notifiers import SendResult

__all__ = ["execute"]


async def execute(action: CancelRunAction, job: Job, runtime: Runtime) -> SendResult:
    """One call to the orchestrator for the run ``action.run_id`` renders to."""
    return await _orchestrated.on_run(
        action,
        job,
        runtime,
        lambda controller, run_id: controller.cancel_run(run_id, idempotency_key=job.key),
    )
