"""Action executors, one module per action type, and what they share.

:func:`load_action` is the boundary: an outbox row's stored action (its durable
JSON form) becomes the typed spec model once, when the row is claimed, and every
stage after it (throttle, grouping, rendering, executors, retry policy, fallback)
reads that model. :func:`execute` runs one attempt of a :class:`Job`'s action:
it builds nothing itself (the caller passes the template context) and never
raises for an outcome. Add a type: a model in ``automations/spec/_actions.py``
and a module here registered in :data:`EXECUTORS`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from automations.delivery.actions import (
    call_webhook,
    cancel_run,
    change_run_state,
    do_nothing,
    emit_event,
    notify,
    pause_automation,
    resume_automation,
    retry_run,
    run_deployment,
)
from automations.delivery.actions.base import (
    Emit,
    InvalidAction,
    Job,
    RunController,
    Runtime,
    StoredAction,
)
from automations.delivery.actions.context import template_context
from automations.delivery.actions.events import action_event
from automations.spec import Action, NotifyAction
from notifiers import SendResult

__all__ = [
    "EXECUTORS",
    "Emit",
    "InvalidAction",
    "Job",
    "RunController",
    "Runtime",
    "StoredAction",
    "action_event",
    "execute",
    "load_action",
    "prepare",
    "template_context",
]

Executor = Callable[[Any, Job, Runtime], Awaitable[SendResult]]

EXECUTORS: dict[str, Executor] = {
    "notify": notify.execute,
    "call-webhook": call_webhook.execute,
    "retry-run": retry_run.execute,
    "run-deployment": run_deployment.execute,
    "cancel-run": cancel_run.execute,
    "change-run-state": change_run_state.execute,
    "pause-automation": pause_automation.execute,
    "resume-automation": resume_automation.execute,
    "emit-event": emit_event.execute,
    "do-nothing": do_nothing.execute,
}

_ACTION: TypeAdapter[Action] = TypeAdapter(Action)


def load_action(raw: Mapping[str, Any]) -> StoredAction:
    """The typed action of an outbox row's stored JSON, parsed once per distinct JSON.

    A stored action that no longer validates (the spec changed since the intent
    was written) is an :class:`InvalidAction` naming why: its attempt fails
    (not retryable) and the row is dead-lettered, never a crash.
    """
    return _load_cached(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=1024)
def _load_cached(raw: bytes) -> StoredAction:
    try:
        return _ACTION.validate_json(raw)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        stored = orjson.loads(raw)
        kind = stored.get("type", "?") if isinstance(stored, dict) else "?"
        return InvalidAction(str(kind), reason)


def prepare(jobs: Sequence[Job]) -> list[Job]:
    """Blocking (call it from a worker thread): ``jobs`` with each notify's message
    rendered into ``Job.prepared``, so one thread hop serves a whole claimed batch
    instead of one per notification. Other jobs unchanged."""
    return [
        dataclasses.replace(job, prepared=notify.prepare(job.action, job))
        if isinstance(job.action, NotifyAction)
        else job
        for job in jobs
    ]


async def execute(job: Job, runtime: Runtime) -> SendResult:
    """One attempt of ``job``'s action; a bug in an executor fails this action only."""
    action = job.action
    if isinstance(action, InvalidAction):
        reason = action.reason
        return SendResult.failed("-", f"invalid action: {reason}"[:2000])
    executor = EXECUTORS[action.type]
    try:
        return await executor(action, job, runtime)
    except Exception as exc:  # an executor bug must not stop the dispatcher
        return SendResult.failed("-", f"action crashed: {type(exc).__name__}: {exc}"[:2000])
