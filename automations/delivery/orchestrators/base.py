"""The ``RunController`` seam, its result type, and what every HTTP adapter shares.

Contract for every implementation (Prefect, generic HTTP, the in-memory fake):

* One attempt per call, never a retry, never an exception for an outcome:
  each call returns a :class:`ControlResult`. 5xx, 429, 408, 425, timeouts and
  connection errors are ``retryable`` (with the target's ``Retry-After``);
  other 4xx, a refused transition and bad input (an unparseable run id) are
  not. The dispatcher owns backoff, exactly as for notifiers' ``SendResult``.
* ``idempotency_key`` is stable across retries of one intent and is sent to the
  orchestrator so that a redelivered intent has its effect once.
* Run ids are accepted in runbell's neutral form (``flow-run.<id>``), Prefect's
  (``prefect.flow-run.<id>``) or bare; deployment ids likewise.
* ``ControlResult.target`` is masked (``notifiers.mask_url``): safe to log and store.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import httpx

from automations.errors import AutomationsError
from automations.spec import STATE_TYPES
from notifiers import is_retryable_status, retry_after_seconds

__all__ = [
    "STATE_TYPES",
    "ControlResult",
    "HttpAdapter",
    "OrchestratorConfigError",
    "RunController",
    "elapsed_ms",
    "resource_key",
]

# Longest answer excerpt quoted in a failure reason.
_EXCERPT = 200
_USER_AGENT = "runbell-orchestrator/0.1"


class OrchestratorConfigError(AutomationsError):
    """An orchestrator adapter was configured wrongly (URL, method, template syntax)."""


@dataclass(frozen=True, slots=True)
class ControlResult:
    """The outcome of one orchestrator call; retryability is data, not a log line.

    Field names match ``notifiers.SendResult`` so the dispatcher treats both
    alike. ``created_id`` is the orchestrator's id of a run the call created
    (``run_deployment``), bare, without a ``flow-run.`` prefix. ``ref`` holds
    what the orchestrator answered that is worth storing with the attempt
    (run id, resulting state, whether the call was deduplicated); never a secret.
    """

    ok: bool
    retryable: bool
    reason: str
    target: str
    latency_ms: float
    status_code: int | None = None
    retry_after: float | None = None
    created_id: str | None = None
    ref: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.ref is not None:
            object.__setattr__(self, "ref", MappingProxyType(dict(self.ref)))

    @classmethod
    def success(
        cls,
        target: str,
        latency_ms: float,
        *,
        reason: str = "done",
        status_code: int | None = None,
        created_id: str | None = None,
        ref: Mapping[str, str] | None = None,
    ) -> ControlResult:
        """A call that had its effect (or had already had it: see ``ref``)."""
        return cls(
            ok=True,
            retryable=False,
            reason=reason,
            target=target,
            latency_ms=latency_ms,
            status_code=status_code,
            created_id=created_id,
            ref=ref,
        )

    @classmethod
    def failure(
        cls,
        target: str,
        latency_ms: float,
        *,
        reason: str,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
        ref: Mapping[str, str] | None = None,
    ) -> ControlResult:
        """A call that did not have its effect."""
        return cls(
            ok=False,
            retryable=retryable,
            reason=reason,
            target=target,
            latency_ms=latency_ms,
            status_code=status_code,
            retry_after=retry_after,
            ref=ref,
        )


@runtime_checkable
class RunController(Protocol):
    """Acts on runs of one orchestrator: retry, run a deployment, cancel, change state.

    See the module docstring for the contract every implementation keeps.
    """

    @property
    def target(self) -> str:
        """Masked description of the orchestrator, safe for logs and APIs."""
        ...

    async def retry_run(self, run_id: str, *, idempotency_key: str) -> ControlResult:
        """Put a finished run back to be run again (Prefect: Scheduled/AwaitingRetry)."""
        ...

    async def run_deployment(
        self,
        deployment_id: str,
        *,
        parameters: Mapping[str, Any],
        idempotency_key: str,
        schedule_after: timedelta | None = None,
        job_variables: Mapping[str, Any] | None = None,
    ) -> ControlResult:
        """Create one run of a deployment; ``created_id`` is the new run's id."""
        ...

    async def cancel_run(self, run_id: str, *, idempotency_key: str) -> ControlResult:
        """Ask the orchestrator to cancel a run."""
        ...

    async def change_run_state(
        self,
        run_id: str,
        *,
        state_type: str,
        name: str | None = None,
        message: str | None = None,
        force: bool = False,
        idempotency_key: str,
    ) -> ControlResult:
        """Propose a new state for a run; ``force`` skips the orchestrator's rules."""
        ...


class HttpAdapter:
    """What the HTTP adapters share: one ``httpx.AsyncClient``, closed by ``aclose``."""

    def __init__(self, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        if not timeout > 0:
            raise OrchestratorConfigError("timeout must be positive")
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            headers={"User-Agent": _USER_AGENT, **(headers or {})},
            timeout=timeout,
            follow_redirects=False,
        )

    async def _request(
        self, target: str, started: float, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | ControlResult:
        """One request; a transport error or a non-2xx answer becomes the failure result."""
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            return _exception_result(target, elapsed_ms(started), exc, self._timeout)
        if not response.is_success:
            return _status_failure(target, elapsed_ms(started), response)
        return response

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0


def resource_key(value: str, kind: str) -> str:
    """The orchestrator's own id from ``<kind>.<id>``, ``prefect.<kind>.<id>`` or ``<id>``."""
    for prefix in (f"prefect.{kind}.", f"{kind}."):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def _status_failure(target: str, latency_ms: float, response: httpx.Response) -> ControlResult:
    """A non-2xx answer: retryable for 5xx/429/408/425, with ``Retry-After`` when given."""
    code = response.status_code
    reason = f"orchestrator answered HTTP {code}"
    excerpt = response.text[:_EXCERPT].strip()
    if excerpt:
        reason += f": {excerpt}"
    return ControlResult.failure(
        target,
        latency_ms,
        reason=reason,
        retryable=is_retryable_status(code),
        status_code=code,
        retry_after=retry_after_seconds(response),
    )


def _exception_result(
    target: str, latency_ms: float, exc: Exception, timeout: float
) -> ControlResult:
    """Translate an httpx exception: timeouts and transport errors are retryable.

    The reason names the exception type only: httpx messages can quote URLs.
    """
    if isinstance(exc, httpx.TimeoutException):
        reason, retryable = f"timed out after {timeout:g}s ({type(exc).__name__})", True
    elif isinstance(exc, httpx.TransportError):
        reason = f"connection failed ({type(exc).__name__})"
        retryable = not isinstance(exc, httpx.UnsupportedProtocol)
    else:
        reason, retryable = f"request failed ({type(exc).__name__})", False
    return ControlResult.failure(target, latency_ms, reason=reason, retryable=retryable)
