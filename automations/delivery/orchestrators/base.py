"""The ``RunController`` seam and what every HTTP adapter shares.

Contract for every implementation (Prefect, generic HTTP, the in-memory fake):

* One attempt per call, never a retry, never an exception for an outcome:
  each call returns a ``notifiers.SendResult``. 5xx, 429, 408, 425, timeouts and
  connection errors are ``retryable`` (with the target's ``Retry-After``);
  other 4xx, a refused transition and bad input (an unparseable run id) are
  not. The dispatcher owns backoff, exactly as for notifications. A call that
  created a run names it in ``created_id``; ``ref`` holds what the orchestrator
  answered that is worth storing with the attempt (run id, resulting state,
  whether the call was deduplicated); never a secret.
* ``idempotency_key`` is stable across retries of one intent and is sent to the
  orchestrator so that a redelivered intent has its effect once.
* Run ids are accepted in runbell's neutral form (``flow-run.<id>``), Prefect's
  (``prefect.flow-run.<id>``) or bare; deployment ids likewise.
* ``SendResult.target`` is masked (``notifiers.mask_url``): safe to log and store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from automations.errors import AutomationsError
from automations.spec import STATE_TYPES
from notifiers import HttpClient, Reply, SendResult
from notifiers.http import elapsed_ms

__all__ = [
    "STATE_TYPES",
    "HttpAdapter",
    "OrchestratorConfigError",
    "RunController",
    "elapsed_ms",
    "resource_key",
]

_USER_AGENT = "runbell-orchestrator/0.1"


class OrchestratorConfigError(AutomationsError):
    """An orchestrator adapter was configured wrongly (URL, method, template syntax)."""


@runtime_checkable
class RunController(Protocol):
    """Acts on runs of one orchestrator: retry, run a deployment, cancel, change state.

    See the module docstring for the contract every implementation keeps.
    """

    @property
    def target(self) -> str:
        """Masked description of the orchestrator, safe for logs and APIs."""
        ...

    async def retry_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
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
    ) -> SendResult:
        """Create one run of a deployment; ``created_id`` is the new run's id."""
        ...

    async def cancel_run(self, run_id: str, *, idempotency_key: str) -> SendResult:
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
    ) -> SendResult:
        """Propose a new state for a run; ``force`` skips the orchestrator's rules."""
        ...


class HttpAdapter:
    """What the HTTP adapters share: one ``notifiers.HttpClient``, closed by ``aclose``."""

    def __init__(self, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        if not timeout > 0:
            raise OrchestratorConfigError("timeout must be positive")
        self._client = HttpClient(timeout=timeout, headers=headers, user_agent=_USER_AGENT)

    async def _request(
        self,
        target: str,
        started: float,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request; its ``result`` fails for a transport error or a non-2xx answer."""
        return await self._client.request(
            method,
            url,
            target=target,
            what="orchestrator",
            json=json,
            headers=headers,
            started=started,
        )

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


def resource_key(value: str, kind: str) -> str:
    """The orchestrator's own id from ``<kind>.<id>``, ``prefect.<kind>.<id>`` or ``<id>``."""
    for prefix in (f"prefect.{kind}.", f"{kind}."):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value
