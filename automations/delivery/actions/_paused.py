"""Shared by ``pause-automation`` and ``resume-automation``: set the paused flag."""

from __future__ import annotations

from automations.delivery.actions.base import Job, Runtime
from automations.spec import PauseAutomationAction, ResumeAutomationAction
from notifiers import SendResult


async def set_paused(
    action: PauseAutomationAction | ResumeAutomationAction, job: Job, runtime: Runtime, paused: bool
) -> SendResult:
    """Set the flag of ``action.automation`` (this automation when not given)."""
    name = action.automation or job.row.automation
    await runtime.state.set_paused(name, paused)
    return SendResult.done(f"automation.{name}", "paused" if paused else "resumed")
