"""``RunController`` over Prefect's REST API (Prefect 3 server or Prefect Cloud).

Requests, as Prefect's own UI and automations send them (recorded in
``tests/fixtures/prefect/rest``)::

    run_deployment   POST {api}/deployments/{id}/create_flow_run
                     {"parameters": {...}, "idempotency_key": key,
                      ["state": {"type": "SCHEDULED", "name": "Scheduled",
                                 "state_details": {"scheduled_time": now + schedule_after}}],
                      ["job_variables": {...}]}
    retry_run        POST {api}/flow_runs/{id}/set_state
                     {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": ...},
                      "force": retry_force}
    cancel_run       set_state {"type": "CANCELLING", "name": "Cancelling"}, force false
    change_run_state set_state {"type": ..., "name": ..., "message": ...}, force as asked

Outcomes. ``create_flow_run`` answers 201 for a new run and 200 with the
existing run when the idempotency key was seen before: both are successes,
``ref["deduplicated"]`` tells them apart. ``set_state`` answers 2xx whether
or not the transition happened; the body's ``status`` decides: ``ACCEPT`` is
success, ``ABORT`` and ``REJECT`` are non-retryable failures (Prefect's
reason is quoted), ``WAIT`` is retryable after ``details.delay_seconds``.
Exception: a cancel or state change refused because the run already is where
it was asked to go (Prefect cancels a Scheduled run directly: REJECT with the
run now Cancelled) is a success; a refused retry never is.

Idempotency of state changes. ``set_state`` takes no idempotency key, so the
key is written into the state message (``... [runbell key <key>]``) and the
run's state history (``GET {api}/flow_run_states/?flow_run_id=``) is read
first: if a state carrying the key exists, the change already happened (an
earlier attempt whose answer was lost) and the call reports success without
proposing it again. Two attempts of one intent running at the same instant
could both pass the check; the dispatcher never runs them concurrently.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from automations.delivery.orchestrators.base import (
    STATE_TYPES,
    HttpAdapter,
    OrchestratorConfigError,
    elapsed_ms,
    resource_key,
)
from events.clock import Clock, SystemClock
from notifiers import SendResult, mask_url

__all__ = ["STATE_TYPES", "PrefectController"]

_REFUSED = frozenset({"ABORT", "REJECT"})


def _key_marker(idempotency_key: str) -> str:
    return f"[runbell key {idempotency_key}]"


@dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int
    payload: Any


class PrefectController(HttpAdapter):
    """Retries runs, runs deployments, cancels and changes run states in Prefect.

    ``api_url`` is what Prefect calls ``PREFECT_API_URL``: ``http://host:4200/api``
    for a server, ``https://api.prefect.cloud/api/accounts/<a>/workspaces/<w>``
    for Cloud, where ``api_key`` is sent as ``Authorization: Bearer``.
    ``retry_force`` is sent as ``force`` on retries: Prefect's Retry button sends
    false, which Prefect refuses (ABORT) for a run without a deployment; true
    retries those too. ``clock`` dates ``schedule_after``. One
    ``notifiers.HttpClient`` per controller: ``aclose()`` (or ``async with``) when done.
    """

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry_force: bool = False,
        clock: Clock | None = None,
    ) -> None:
        scheme = api_url.partition("://")[0].lower()
        if scheme not in ("http", "https"):
            raise OrchestratorConfigError(
                f"Prefect API URL must be http(s), not {scheme or 'no scheme'!r}; "
                "write e.g. http://127.0.0.1:4200/api"
            )
        super().__init__(timeout, {"Authorization": f"Bearer {api_key}"} if api_key else None)
        self._api_url = api_url.rstrip("/")
        self._retry_force = retry_force
        self._clock: Clock = clock if clock is not None else SystemClock()

    @property
    def target(self) -> str:
        """``prefect <masked API URL>``."""
        return f"prefect {mask_url(self._api_url)}"

    # -- operations ------------------------------------------------------
    async def retry_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
        """Set the run to Scheduled/AwaitingRetry, as Prefect's Retry button does."""
        state = {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry by runbell"}
        return await self._set_state(run_id, state, self._retry_force, idempotency_key, frozenset())

    async def cancel_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
        """Set the run to Cancelling; Prefect's worker then stops it."""
        state = {"type": "CANCELLING", "name": "Cancelling", "message": "Cancelled by runbell"}
        # A Scheduled run has nothing to stop: Prefect REJECTs Cancelling and
        # puts it straight in Cancelled (seen on 3.8.8). That is the effect asked for.
        done = frozenset({"CANCELLING", "CANCELLED"})
        return await self._set_state(run_id, state, False, idempotency_key, done)

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
        """Propose ``state_type`` (case-insensitive, one of ``STATE_TYPES``) for the run."""
        kind = state_type.upper()
        if kind not in STATE_TYPES:
            return SendResult.failure(
                self.target,
                0.0,
                reason=f"unknown state type {state_type!r}; use one of {sorted(STATE_TYPES)}",
                retryable=False,
            )
        state: dict[str, Any] = {"type": kind, "message": message or "State changed by runbell"}
        if name:
            state["name"] = name
        return await self._set_state(run_id, state, force, idempotency_key, frozenset({kind}))

    async def run_deployment(
        self,
        deployment_id: str,
        *,
        parameters: Mapping[str, Any],
        idempotency_key: str,
        schedule_after: timedelta | None = None,
        job_variables: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Create one flow run of the deployment; Prefect dedups on ``idempotency_key``."""
        started = time.perf_counter()
        deployment = _uuid(resource_key(deployment_id, "deployment"))
        if deployment is None:
            return self._bad_input(started, f"deployment id {deployment_id!r} is not a UUID")
        body: dict[str, Any] = {"parameters": dict(parameters), "idempotency_key": idempotency_key}
        if schedule_after is not None:
            when = self._clock.now() + schedule_after
            body["state"] = {
                "type": "SCHEDULED",
                "name": "Scheduled",
                "state_details": {"scheduled_time": when.isoformat()},
            }
        if job_variables is not None:
            body["job_variables"] = dict(job_variables)
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            return self._bad_input(started, f"parameters are not JSON: {exc}")

        path = f"/deployments/{deployment}/create_flow_run"
        answer = await self._send("POST", path, body, started)
        if isinstance(answer, SendResult):
            return answer
        run = answer.payload
        run_uuid = str(run.get("id") or "") if isinstance(run, dict) else ""
        if not run_uuid:
            return self._unexpected(path, started, answer)
        state = run.get("state") or {}
        deduplicated = answer.status_code != 201
        ref = {
            "flow_run_id": run_uuid,
            "flow_run_name": str(run.get("name") or ""),
            "deployment_id": deployment,
            "state_type": str(state.get("type") or ""),
            "state_name": str(state.get("name") or ""),
            "deduplicated": "true" if deduplicated else "false",
        }
        reason = (
            f"flow run {run_uuid} already created with this idempotency key"
            if deduplicated
            else f"created flow run {ref['flow_run_name']} ({run_uuid})"
        )
        return SendResult.success(
            self._target(path),
            elapsed_ms(started),
            reason=reason,
            status_code=answer.status_code,
            created_id=run_uuid,
            ref=ref,
        )

    # -- plumbing --------------------------------------------------------
    async def _set_state(
        self,
        run_id: str,
        state: dict[str, Any],
        force: bool,
        idempotency_key: str,
        already_done: frozenset[str],
    ) -> SendResult:
        """Propose ``state``; a refusal that leaves the run in ``already_done`` types is success."""
        started = time.perf_counter()
        run = _uuid(resource_key(run_id, "flow-run"))
        if run is None:
            return self._bad_input(started, f"run id {run_id!r} is not a UUID")
        marker = _key_marker(idempotency_key)

        history = await self._send("GET", f"/flow_run_states/?flow_run_id={run}", None, started)
        if isinstance(history, SendResult):
            return history
        if isinstance(history.payload, list):
            for past in history.payload:
                if isinstance(past, dict) and marker in str(past.get("message") or ""):
                    return SendResult.success(
                        self._target(f"/flow_runs/{run}/set_state"),
                        elapsed_ms(started),
                        reason=f"state {past.get('name')} already set with this idempotency key",
                        status_code=history.status_code,
                        ref=_state_ref(run, "ACCEPT", past, deduplicated=True),
                    )

        path = f"/flow_runs/{run}/set_state"
        proposed = {**state, "message": f"{state['message']} {marker}"}
        answer = await self._send("POST", path, {"state": proposed, "force": force}, started)
        if isinstance(answer, SendResult):
            return answer
        result = answer.payload
        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            return self._unexpected(path, started, answer)
        status = result["status"]
        current: dict[str, Any] = _object(result.get("state"))
        details: dict[str, Any] = _object(result.get("details"))
        ref = _state_ref(run, status, current, deduplicated=False)
        target, latency = self._target(path), elapsed_ms(started)
        if status == "ACCEPT" or (status in _REFUSED and current.get("type") in already_done):
            return SendResult.success(
                target,
                latency,
                reason=f"run {run} is now {current.get('type')}/{current.get('name')}",
                status_code=answer.status_code,
                ref=ref,
            )
        why = details.get("reason") or "no reason given"
        reason = (
            f"Prefect answered {status} to {proposed['type']}"
            f"/{proposed.get('name', proposed['type'].title())}: {why}; "
            f"the run stays {current.get('type')}/{current.get('name')}"
        )
        if status == "WAIT":
            delay = details.get("delay_seconds")
            return SendResult.failure(
                target,
                latency,
                reason=reason,
                retryable=True,
                status_code=answer.status_code,
                retry_after=float(delay) if isinstance(delay, int | float) else None,
                ref=ref,
            )
        return SendResult.failure(
            target, latency, reason=reason, retryable=False, status_code=answer.status_code, ref=ref
        )

    async def _send(
        self, method: str, path: str, body: Any, started: float
    ) -> _Answer | SendResult:
        """One request; a transport error, a non-2xx or a non-JSON answer becomes a result."""
        reply = await self._request(
            self._target(path), started, method, self._api_url + path, json=body
        )
        if not reply.result.ok or reply.result.status_code is None:
            return reply.result
        payload = reply.json()
        answer = _Answer(reply.result.status_code, payload)
        if payload is None:
            return self._unexpected(path, started, answer)
        return answer

    def _target(self, path: str) -> str:
        return mask_url(self._api_url + path.partition("?")[0])

    def _bad_input(self, started: float, reason: str) -> SendResult:
        return SendResult.failure(self.target, elapsed_ms(started), reason=reason, retryable=False)

    def _unexpected(self, path: str, started: float, answer: _Answer) -> SendResult:
        # A 2xx we cannot read is not a success: something else answers at this URL.
        return SendResult.failure(
            self._target(path),
            elapsed_ms(started),
            reason=f"HTTP {answer.status_code} with an answer that is not Prefect's; "
            "check the API URL (it ends in /api)",
            retryable=False,
            status_code=answer.status_code,
        )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _state_ref(
    run: str, status: str, state: Mapping[str, Any], *, deduplicated: bool
) -> dict[str, str]:
    return {
        "flow_run_id": run,
        "status": status,
        "state_type": str(state.get("type") or ""),
        "state_name": str(state.get("name") or ""),
        "deduplicated": "true" if deduplicated else "false",
    }
