"""Orchestrator adapters behind the ``RunController`` seam: Prefect REST and generic HTTP.

Actions that touch runs (``retry-run``, ``run-deployment``, ``cancel-run``,
``change-run-state``) call a ``RunController``; the in-memory fake for unit
tests is ``automations.delivery.orchestrators.testing.FakeRunController``. Contract:
see ``base``'s docstring (one attempt, results not exceptions, the
idempotency key reaches the orchestrator).
"""

from automations.delivery.orchestrators.base import OrchestratorConfigError, RunController
from automations.delivery.orchestrators.http import HttpController, RequestTemplate, render_json
from automations.delivery.orchestrators.prefect import STATE_TYPES, PrefectController

__all__ = [
    "STATE_TYPES",
    "HttpController",
    "OrchestratorConfigError",
    "PrefectController",
    "RequestTemplate",
    "RunController",
    "render_json",
]
