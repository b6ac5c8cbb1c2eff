"""The Prefect adapter against a real Prefect 3.8.8 server: runs really move, once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from automations.delivery.orchestrators import PrefectController
from tests.integration.prefect_server import PrefectServer

# The first run on a machine builds Prefect's venv (about 40 s) inside a test's setup.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


class Prefect:
    """Just enough of Prefect's REST API to arrange runs for the tests."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.client.post(path, json=body)
        assert response.is_success, response.text
        return response.json()

    async def flow(self) -> str:
        flow = await self.post("/flows/", {"name": f"runbell-it-{uuid.uuid4().hex[:8]}"})
        return str(flow["id"])

    async def deployment(self, flow_id: str) -> str:
        deployment = await self.post("/deployments/", {"name": "nightly", "flow_id": flow_id})
        return str(deployment["id"])

    async def failed_run(self, *, flow_id: str, deployment_id: str | None) -> str:
        if deployment_id is None:
            run = await self.post("/flow_runs/", {"flow_id": flow_id})
        else:
            run = await self.post(f"/deployments/{deployment_id}/create_flow_run", {})
        failed = {"state": {"type": "FAILED", "name": "Failed"}, "force": True}
        answer = await self.post(f"/flow_runs/{run['id']}/set_state", failed)
        assert answer["status"] == "ACCEPT"
        return str(run["id"])

    async def run(self, run_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/flow_runs/{run_id}")
        assert response.status_code == 200
        run: dict[str, Any] = response.json()
        return run


@pytest.fixture
async def prefect(prefect_server: PrefectServer) -> AsyncIterator[Prefect]:
    async with httpx.AsyncClient(base_url=prefect_server.api_url, timeout=10) as client:
        yield Prefect(client)


class Patient:
    """The controller, retrying what it reports as retryable, as the dispatcher does.

    Prefect's SQLite answers 503 now and then under load; that is the server's
    transient state, not what these tests are about. Bounded: 10 attempts.
    """

    def __init__(self, controller: PrefectController) -> None:
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._controller, name)

        async def patient(*args: Any, **kwargs: Any) -> Any:
            for _ in range(9):
                result = await call(*args, **kwargs)
                if result.ok or not result.retryable:
                    return result
                pause = asyncio.Event()
                with contextlib.suppress(TimeoutError):  # a short, bounded back-off
                    await asyncio.wait_for(pause.wait(), result.retry_after or 0.2)
            return await call(*args, **kwargs)

        return patient


@pytest.fixture
async def controller(prefect_server: PrefectServer) -> AsyncIterator[Any]:
    async with PrefectController(prefect_server.api_url) as controller:
        yield Patient(controller)


async def test_retry_puts_a_failed_run_back_to_scheduled(
    prefect: Prefect, controller: PrefectController
) -> None:
    """A failed deployment run really goes back to Scheduled/AwaitingRetry, once per key."""
    flow_id = await prefect.flow()
    run_id = await prefect.failed_run(
        flow_id=flow_id, deployment_id=await prefect.deployment(flow_id)
    )

    result = await controller.retry_run(f"flow-run.{run_id}", idempotency_key="firing-a:0")
    again = await controller.retry_run(run_id, idempotency_key="firing-a:0")

    assert result.ok, result.reason
    assert result.ref is not None and result.ref["deduplicated"] == "false"
    run = await prefect.run(run_id)
    assert (run["state_type"], run["state_name"]) == ("SCHEDULED", "AwaitingRetry")
    assert again.ok and again.ref is not None and again.ref["deduplicated"] == "true"
    history = await prefect.client.get("/flow_run_states/", params={"flow_run_id": run_id})
    assert [s["name"] for s in history.json()].count("AwaitingRetry") == 1


async def test_refused_retry_is_a_failure(
    prefect: Prefect,
    controller: PrefectController,
    prefect_server: PrefectServer,
) -> None:
    """Prefect's ABORT for a run without deployment is a non-retryable failure; force retries it."""
    run_id = await prefect.failed_run(flow_id=await prefect.flow(), deployment_id=None)

    refused = await controller.retry_run(run_id, idempotency_key="firing-b:0")

    assert not refused.ok and not refused.retryable
    assert refused.status_code == 200
    assert "ABORT" in refused.reason and "without an associated deployment" in refused.reason
    assert (await prefect.run(run_id))["state_type"] == "FAILED"
    async with PrefectController(prefect_server.api_url, retry_force=True) as forcing:
        forced = await Patient(forcing).retry_run(run_id, idempotency_key="firing-b:0")
    assert forced.ok, forced.reason
    assert (await prefect.run(run_id))["state_name"] == "AwaitingRetry"


async def test_run_deployment_creates_one_run_per_key(
    prefect: Prefect, controller: PrefectController
) -> None:
    """A deployment run is really created, once, even when the firing is delivered twice."""
    deployment_id = await prefect.deployment(await prefect.flow())
    parameters = {"n": 3, "full": True, "tables": ["a", "b"]}

    first = await controller.run_deployment(
        f"deployment.{deployment_id}", parameters=parameters, idempotency_key="firing-c:1"
    )
    second = await controller.run_deployment(
        deployment_id, parameters=parameters, idempotency_key="firing-c:1"
    )

    assert first.ok and second.ok, (first.reason, second.reason)
    assert first.created_id is not None and second.created_id == first.created_id
    assert first.ref is not None and first.ref["deduplicated"] == "false"
    assert second.ref is not None and second.ref["deduplicated"] == "true"
    runs = await prefect.post(
        "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    )
    assert [r["id"] for r in runs] == [first.created_id]
    assert runs[0]["parameters"] == parameters
    assert runs[0]["state_type"] == "SCHEDULED"


async def test_cancel_and_change_state_really_move_the_run(
    prefect: Prefect, controller: PrefectController
) -> None:
    """cancel_run really cancels a scheduled run (REJECT, now Cancelled); a state can be forced."""
    deployment_id = await prefect.deployment(await prefect.flow())
    created = await controller.run_deployment(deployment_id, parameters={}, idempotency_key="d:0")
    assert created.created_id is not None

    cancelled = await controller.cancel_run(created.created_id, idempotency_key="d:1")
    changed = await controller.change_run_state(
        created.created_id, state_type="completed", force=True, idempotency_key="d:2"
    )

    assert cancelled.ok, cancelled.reason
    assert cancelled.ref is not None and cancelled.ref["state_type"] == "CANCELLED"
    assert changed.ok, changed.reason
    assert (await prefect.run(created.created_id))["state_type"] == "COMPLETED"
