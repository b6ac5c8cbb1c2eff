"""An in-memory ``RunController`` for unit tests: records calls, dedups on keys, scripts outcomes.

::

    fake = FakeRunController()
    fake.script(SendResult.failure("fake", 0.0, reason="down", retryable=True))
    await fake.retry_run("flow-run.1", idempotency_key="k")   # -> the scripted failure
    await fake.retry_run("flow-run.1", idempotency_key="k")   # -> success, one effect
    await fake.retry_run("flow-run.1", idempotency_key="k")   # -> same success, deduplicated
    assert [e.operation for e in fake.effects] == ["retry_run"]

It keeps the real adapters' contract: ids in neutral or bare form, one effect
per idempotency key (a repeated key answers the first success again, with
``ref["deduplicated"] == "true"``), and a deterministic ``created_id`` per key.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from automations.delivery.orchestrators.base import resource_key
from notifiers import SendResult

__all__ = ["ControlCall", "FakeRunController"]

_CREATED_IDS = uuid.UUID("5b0d2c1e-7f7a-4d55-9d55-2a4f0a9a3e11")


@dataclass(frozen=True, slots=True)
class ControlCall:
    """One call as received; ``subject`` is the bare run or deployment id."""

    operation: str
    subject: str
    idempotency_key: str
    arguments: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arguments", MappingProxyType(dict(self.arguments)))


class FakeRunController:
    """Answers from a script, then succeeds; see the module docstring."""

    target = "fake-orchestrator"

    def __init__(self) -> None:
        self.calls: list[ControlCall] = []
        self.effects: list[ControlCall] = []
        self._script: deque[SendResult] = deque()
        self._done: dict[str, SendResult] = {}

    def script(self, *results: SendResult) -> None:
        """Answer the next calls (with a key not yet done) with ``results``, in order."""
        self._script.extend(results)

    async def retry_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
        return self._handle(
            ControlCall("retry_run", resource_key(run_id, "flow-run"), idempotency_key)
        )

    async def cancel_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
        return self._handle(
            ControlCall("cancel_run", resource_key(run_id, "flow-run"), idempotency_key)
        )

    async def change_run_state(
        self,
        run_id: str,
        *,
        state_type: str,
        name: str | None = None,
        message: str | None = None,
        force: bool = False,
        idempotency_key: str,
    ) -> SendResult:
        arguments = {
            "state_type": state_type.upper(),
            "name": name,
            "message": message,
            "force": force,
        }
        call = ControlCall(
            "change_run_state", resource_key(run_id, "flow-run"), idempotency_key, arguments
        )
        return self._handle(call)

    async def run_deployment(
        self,
        deployment_id: str,
        *,
        parameters: Mapping[str, Any],
        idempotency_key: str,
        schedule_after: timedelta | None = None,
        job_variables: Mapping[str, Any] | None = None,
    ) -> SendResult:
        arguments = {
            "parameters": dict(parameters),
            "schedule_after": schedule_after,
            "job_variables": dict(job_variables) if job_variables is not None else None,
        }
        call = ControlCall(
            "run_deployment", resource_key(deployment_id, "deployment"), idempotency_key, arguments
        )
        return self._handle(call)

    def _handle(self, call: ControlCall) -> SendResult:
        self.calls.append(call)
        earlier = self._done.get(call.idempotency_key)
        if earlier is not None:
            return SendResult.success(
                earlier.target,
                0.0,
                reason="already done with this idempotency key",
                created_id=earlier.created_id,
                ref={**(earlier.ref or {}), "deduplicated": "true"},
            )
        result = self._script.popleft() if self._script else self._success(call)
        if result.ok:
            self._done[call.idempotency_key] = result
            self.effects.append(call)
        return result

    def _success(self, call: ControlCall) -> SendResult:
        created = None
        if call.operation == "run_deployment":
            created = str(uuid.uuid5(_CREATED_IDS, call.idempotency_key))
        return SendResult.success(
            self.target,
            0.0,
            reason=f"{call.operation} done",
            created_id=created,
            ref={"subject": call.subject, "deduplicated": "false"},
        )
