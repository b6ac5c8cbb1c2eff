"""Action executors, one module per action type, and what they share.

:func:`execute` runs one attempt of an outbox row's action: it validates the
stored action against the spec, builds nothing itself (the caller passes the
template context) and never raises for an outcome. Add a type: a model in
``automations/spec/_actions.py`` and a module here registered in :data:`EXECUTORS`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Sequence
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
from automations.delivery.actions.base import Emit, Job, RunController, Runtime
from automations.delivery.actions.context import template_context
from automations.delivery.actions.events import action_event
from automations.spec import Action
from notifiers import SendResult

__all__ = [
    "EXECUTORS",
    "Emit",
    "Job",
    "RunController",
    "Runtime",
    "action_event",
    "execute",
    "parse_action",
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

_ACTION: TypeAdapter[Any] = TypeAdapter(Action)


def parse_action(raw: dict[str, Any]) -> Any:
    """The spec model of a stored action; raises ValidationError.

    Every intent of one configured action stores the same dict, so the parsed
    (immutable) model is cached by its JSON: validation re-parses templates.
    """
    return _parse_cached(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=1024)
def _parse_cached(raw: bytes) -> Any:
    return _ACTION.validate_json(raw)


def prepare(jobs: Sequence[Job]) -> list[Job]:
    """Blocking (call it from a worker thread): ``jobs`` with each notify's message
    rendered into ``Job.prepared``, so one thread hop serves a whole claimed batch
    instead of one per notification. Other jobs, and unparsable actions, unchanged."""
    out: list[Job] = []
    for job in jobs:
        try:
            action = parse_action(job.row.action)
        except ValidationError:
            out.append(job)  # execute reports it
            continue
        if action.type == "notify":
            job = dataclasses.replace(job, prepared=notify.prepare(action, job))
        out.append(job)
    return out


async def execute(job: Job, runtime: Runtime) -> SendResult:
    """One attempt of ``job``'s action; a bug in an executor fails this action only."""
    try:
        action = parse_action(job.row.action)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return SendResult.failed("-", f"invalid action: {reason}"[:2000])
    executor = EXECUTORS[action.type]
    try:
        return await executor(action, job, runtime)
    except Exception as exc:  # an executor bug must not stop the dispatcher
        return SendResult.failed("-", f"action crashed: {type(exc).__name__}: {exc}"[:2000])
