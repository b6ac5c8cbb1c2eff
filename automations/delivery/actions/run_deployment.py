"""``run-deployment``: create one run of a deployment.

Parameters and job variables are rendered with their JSON types kept (a string
that is one ``{{ expression }}`` becomes that value). The outbox id is the
idempotency key, so a firing delivered twice creates one run. The created run's
id is stored with the delivery and named in ``automation.action.executed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from automations.delivery.actions import _orchestrated
from automations.delivery.actions.base import Job, RunController, Runtime
from automations.spec import RunDeploymentAction
from notifiers import SendResult

__all__ = ["execute"]


async def execute(action: RunDeploymentAction, job: Job, runtime: Runtime) -> SendResult:
    """One create-run call; ``schedule_after`` delays the new run's start."""

    async def act(
        controller: RunController, deployment_id: str, rendered: dict[str, Any]
    ) -> SendResult:
        return await controller.run_deployment(
            deployment_id,
            parameters=rendered["parameters"] or {},
            idempotency_key=job.key,
            schedule_after=action.schedule_after or None,
            job_variables=rendered["job_variables"],
        )

    templates = {"parameters": action.parameters, "job_variables": action.job_variables}
    result = await _orchestrated.call(
        job, runtime, action.orchestrator, action.target, "deployment id", act, templates
    )
    if result.ok and result.created_id:
        ref = {**(result.ref or {}), "flow_run_id": result.created_id}
        return dataclasses.replace(result, ref=ref)
    return result
