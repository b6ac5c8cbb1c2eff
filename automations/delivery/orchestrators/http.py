"""``RunController`` over templated HTTP requests, for Airflow, Dagster or in-house runners.

Each operation is one :class:`RequestTemplate`: method, URL, headers and a JSON
body whose strings are sandboxed Jinja (``notifiers.render``). A body string
that is exactly one expression keeps its JSON type (``"{{ parameters.n }}"``
with ``n=3`` renders to ``3``, a mapping stays a mapping, a missing value is
``null``); any other string renders as text. Dictionary keys are not templated.

Names available to every template::

    operation        "retry_run" | "run_deployment" | "cancel_run" | "change_run_state"
    idempotency_key  also sent as the Idempotency-Key header
    run_id           the run's id without a "flow-run." prefix  (run operations)
    resource_id      "flow-run.<run_id>"                         (run operations)
    deployment_id, parameters, job_variables,
    schedule_after_seconds (number or null),
    scheduled_time (ISO 8601 or null)                            (run_deployment)
    state_type (upper case), state_name, message, force          (change_run_state)

Values are not URL-encoded for you: write ``{{ run_id | urlencode }}`` in a URL
path. A 2xx answer is success (``created_id`` is read from the answer's JSON
at ``created_id_path``, dotted, when set); anything else is a failure, with
notifiers' retryability rules. Header values are treated as secrets: they
never appear in a target or a reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from automations.delivery.orchestrators.base import (
    HttpAdapter,
    OrchestratorConfigError,
    elapsed_ms,
    resource_key,
)
from events.clock import Clock, SystemClock
from notifiers import (
    SendResult,
    TemplateError,
    check_syntax,
    mask_url,
    render_field,
    render_json,
)

__all__ = ["HttpController", "RequestTemplate", "render_json"]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """One templated request; see the module docstring for the names templates see."""

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    body: Any = None
    created_id_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.upper())
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        if self.method not in _METHODS:
            raise OrchestratorConfigError(
                f"method must be one of {sorted(_METHODS)}, not {self.method!r}"
            )
        if not self.url.lower().startswith(("http://", "https://")):
            raise OrchestratorConfigError("URL must start with http:// or https://")
        for where, source in self._sources():
            problem = check_syntax(source)
            if problem is not None:
                raise OrchestratorConfigError(f"{where}: {problem}")

    def _sources(self) -> list[tuple[str, str]]:
        found = [("url", self.url)]
        found += [(f"headers.{name}", value) for name, value in self.headers.items()]
        pending: list[tuple[str, Any]] = [("body", self.body)]
        while pending:
            where, value = pending.pop()
            if isinstance(value, str):
                found.append((where, value))
            elif isinstance(value, Mapping):
                pending += [(f"{where}.{k}", v) for k, v in value.items()]
            elif isinstance(value, list | tuple):
                pending += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        return found


@dataclass(frozen=True, slots=True)
class _Rendered:
    method: str
    url: str
    headers: dict[str, str]
    body: Any


class HttpController(HttpAdapter):
    """Runs each operation as its templated request; an unset operation fails (not retryable).

    ``name`` is the masked description returned as ``target`` (never put a
    secret in it). One ``notifiers.HttpClient`` per controller: ``aclose()``
    (or ``async with``) when done.
    """

    def __init__(
        self,
        *,
        name: str = "http runner",
        retry_run: RequestTemplate | None = None,
        run_deployment: RequestTemplate | None = None,
        cancel_run: RequestTemplate | None = None,
        change_run_state: RequestTemplate | None = None,
        timeout: float = 10.0,
        render_timeout: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(timeout)
        self._name = name
        self._templates = {
            "retry_run": retry_run,
            "run_deployment": run_deployment,
            "cancel_run": cancel_run,
            "change_run_state": change_run_state,
        }
        self._render_timeout = render_timeout
        self._clock: Clock = clock if clock is not None else SystemClock()

    @property
    def target(self) -> str:
        return self._name

    # -- operations ------------------------------------------------------
    async def retry_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
        """Send the ``retry_run`` request."""
        return await self._call("retry_run", idempotency_key, _run_names(run_id))

    async def cancel_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
        """Send the ``cancel_run`` request."""
        return await self._call("cancel_run", idempotency_key, _run_names(run_id))

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
        """Send the ``change_run_state`` request."""
        names = {
            **_run_names(run_id),
            "state_type": state_type.upper(),
            "state_name": name,
            "message": message,
            "force": force,
        }
        return await self._call("change_run_state", idempotency_key, names)

    async def run_deployment(
        self,
        deployment_id: str,
        *,
        parameters: Mapping[str, Any],
        idempotency_key: str,
        schedule_after: timedelta | None = None,
        job_variables: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Send the ``run_deployment`` request."""
        when = self._clock.now() + schedule_after if schedule_after is not None else None
        names = {
            "deployment_id": resource_key(deployment_id, "deployment"),
            "parameters": dict(parameters),
            "job_variables": dict(job_variables or {}),
            "schedule_after_seconds": (
                schedule_after.total_seconds() if schedule_after is not None else None
            ),
            "scheduled_time": when.isoformat() if when is not None else None,
        }
        return await self._call("run_deployment", idempotency_key, names)

    # -- plumbing --------------------------------------------------------
    async def _call(
        self, operation: str, idempotency_key: str, names: Mapping[str, Any]
    ) -> SendResult:
        started = time.perf_counter()
        template = self._templates[operation]
        if template is None:
            return SendResult.failure(
                self.target,
                0.0,
                reason=f"{operation} is not configured for {self._name}; add a request for it",
                retryable=False,
            )
        context = {"operation": operation, "idempotency_key": idempotency_key, **names}
        try:
            request = await asyncio.to_thread(self._render, template, context)
        except TemplateError as exc:
            return SendResult.failure(
                f"{template.method} {self._name}",
                elapsed_ms(started),
                reason=f"template error: {exc}",
                retryable=False,
            )
        target = f"{request.method} {mask_url(request.url)}"
        headers = {**request.headers, "Idempotency-Key": idempotency_key}
        reply = await self._request(
            target, started, request.method, request.url, headers=headers, json=request.body
        )
        if not reply.result.ok:
            return reply.result
        return dataclasses.replace(
            reply.result,
            reason=f"{operation} answered HTTP {reply.result.status_code}",
            created_id=_created_id(reply.json(), template.created_id_path),
        )

    def _render(self, template: RequestTemplate, context: Mapping[str, Any]) -> _Rendered:
        timeout = self._render_timeout
        url = render_field(template.url, context, timeout=timeout, where="url")
        headers = {
            name: render_field(value, context, timeout=timeout, where=f"headers.{name}")
            for name, value in template.headers.items()
        }
        body = render_json(template.body, context, timeout=timeout, where="body")
        return _Rendered(template.method, url, headers, body)


def _run_names(run_id: str) -> dict[str, Any]:
    bare = resource_key(run_id, "flow-run")
    return {"run_id": bare, "resource_id": f"flow-run.{bare}"}


def _created_id(found: Any, path: str | None) -> str | None:
    if path is None:
        return None
    for part in path.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return None if found is None or isinstance(found, Mapping | list) else str(found)
