"""``resume-automation``: resume an automation (this one unless ``automation`` names another).

The flag lives in the state store (``StateStore.set_paused``/``paused``), which the
engine reads; setting it again is harmless, so a redelivered intent is too.
"""

from __future__ import annotations

from automations.delivery.actions import _paused
from automations.delivery.actions.base import Job, Runtime
from automations.spec import ResumeAutomationAction
from notifiers import SendResult

__all__ = ["execute"]


async def execute(action: ResumeAutomationAction, job: Job, runtime: Runtime) -> SendResult:
    """Set the automation's paused flag to False."""
    return await _paused.set_paused(action, job, runtime, False)
