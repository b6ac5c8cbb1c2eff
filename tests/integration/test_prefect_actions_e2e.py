"""Through the whole service: a failed Prefect run is retried and a downstream deployment
runs — on a real Prefect 3.8.8 server, once, even when the delivery is replayed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from automations.testing import settle
from tests.automations.service_harness import Running, running_service
from tests.integration.prefect_server import PrefectServer
from tests.integration.test_prefect_real import Prefect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

YAML = """
orchestrators:
  prefect:
    prefect: {api_url: "${PREFECT_API_URL}"}
automations:
  - name: retry-and-rerun
    trigger:
      type: event
      expect: ["flow-run.Failed"]
      match: {run-count: "1"}
      match_related: {resource.role: tag, resource.id: "tag.production"}
    actions:
      - type: retry-run
      - type: run-deployment
        deployment_id: "${DOWNSTREAM}"
        parameters: {failed_run: "{{ run.id }}", attempts: 3}
"""


@pytest.fixture
async def prefect(prefect_server: PrefectServer) -> AsyncIterator[Prefect]:
    async with httpx.AsyncClient(base_url=prefect_server.api_url, timeout=10) as client:
        yield Prefect(client)


async def all_sent(running: Running, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait (bounded) until every delivery is sent: Prefect's SQLite may answer 503 first."""
    deadline = time.monotonic() + timeout
    while True:
        await settle(running.service, timeout=timeout)
        deliveries: list[dict[str, Any]] = (await running.client.get("/api/deliveries")).json()[
            "deliveries"
        ]
        if {d["status"] for d in deliveries} == {"sent"} or time.monotonic() > deadline:
            return deliveries
        with contextlib.suppress(TimeoutError):
            await running.service.dispatcher.progressed(1.0)


async def runs_of(prefect: Prefect, deployment_id: str) -> list[dict[str, Any]]:
    answer = await prefect.client.post(
        "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}
    )
    assert answer.status_code == 200
    runs: list[dict[str, Any]] = answer.json()
    return runs


async def test_retry_and_downstream_run_happen_once(
    tmp_path: Path, prefect_server: PrefectServer, prefect: Prefect
) -> None:
    """Failed event → retry-run + run-deployment, each effective once; a replay changes nothing."""
    flow_id = await prefect.flow()
    upstream = await prefect.deployment(flow_id)
    downstream = await prefect.deployment(await prefect.flow())
    run_id = await prefect.failed_run(flow_id=flow_id, deployment_id=upstream)
    env = {"PREFECT_API_URL": prefect_server.api_url, "DOWNSTREAM": downstream}
    event = {
        "id": "6f1c2d7e-0a4b-4c8e-9d3f-2b5a7c9e1f01",
        "occurred": "2026-11-21T11:36:31Z",
        "event": "flow-run.Failed",
        "resource": {"resource.id": f"flow-run.{run_id}", "run-count": "1"},
        "related": [
            {"resource.id": f"deployment.{upstream}", "resource.role": "deployment"},
            {"resource.id": "tag.production", "resource.role": "tag"},
        ],
    }
    async with running_service(tmp_path, env=env, yaml_text=YAML) as running:
        assert (await running.client.post("/api/events", json=event)).status_code == 202
        deliveries = await all_sent(running)
        assert {d["status"] for d in deliveries} == {"sent"}, deliveries
        for delivery in deliveries:  # the firing delivered again, on purpose
            replay = await running.client.post(f"/api/deliveries/{delivery['id']}/replay")
            assert replay.status_code == 202
        assert {d["status"] for d in await all_sent(running)} == {"sent"}
    run = await prefect.run(run_id)
    assert (run["state_type"], run["state_name"]) == ("SCHEDULED", "AwaitingRetry")
    history = await prefect.client.get("/flow_run_states/", params={"flow_run_id": run_id})
    assert [s["name"] for s in history.json()].count("AwaitingRetry") == 1
    created = await runs_of(prefect, downstream)
    assert len(created) == 1
    assert created[0]["parameters"] == {"failed_run": run_id, "attempts": 3}
