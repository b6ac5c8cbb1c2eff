"""An event POSTed to the API reaches a real local HTTP receiver as a notification."""

from __future__ import annotations

from pathlib import Path

import pytest

from automations.testing import settle
from tests.automations.service_harness import failed_run, running_service
from tests.integration.http_receiver import HttpReceiver

pytestmark = pytest.mark.integration


async def _post_and_receive(
    tmp_path: Path,
    http_receiver: HttpReceiver,
    *,
    bus_url: str,
    database_url: str | None,
    topic: str = "runbell.events",
) -> None:
    env = {"HOOK_URL": f"json://127.0.0.1:{http_receiver.port}/hook"}
    async with running_service(
        tmp_path, env=env, bus_url=bus_url, database_url=database_url, topic=topic
    ) as running:
        event = failed_run(name="nightly-etl")
        assert (await running.client.post("/api/events", json=event)).status_code == 202
        assert (await running.client.post("/api/events", json=event)).status_code == 202
        [request] = await http_receiver.wait_for_async(1, timeout=60)
        assert request.path == "/hook"
        assert request.json["title"] == "Run nightly-etl failed"
        assert request.json["message"] == "RuntimeError: warehouse load failed"
        # A second, different failure: exactly one more notification, in order.
        second = failed_run(name="hourly-sync")
        await running.client.post("/api/events", json=second)
        requests = await http_receiver.wait_for_async(2, timeout=60)
        assert [r.json["title"] for r in requests] == [
            "Run nightly-etl failed",
            "Run hourly-sync failed",
        ]
        await settle(running.service, timeout=30)
        firings = (await running.client.get("/api/firings")).json()["firings"]
        assert len(firings) == 2
        deliveries = (await running.client.get("/api/deliveries")).json()["deliveries"]
        assert {d["status"] for d in deliveries} == {"sent"}
    assert len(http_receiver.requests) == 2  # the duplicate id never notified twice


async def test_embedded_default(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    """memory:// bus + SQLite: POST → engine → outbox → Apprise json:// → receiver."""
    await _post_and_receive(tmp_path, http_receiver, bus_url="memory://", database_url=None)


async def test_kafka_and_postgres(
    tmp_path: Path,
    http_receiver: HttpReceiver,
    kafka_url: str,
    fresh_postgres_url: str,
    unique_topic: str,
) -> None:
    """Real Kafka-protocol broker + PostgreSQL: the same loop, the duplicate still stored once."""
    await _post_and_receive(
        tmp_path,
        http_receiver,
        bus_url=kafka_url,
        database_url=fresh_postgres_url,
        topic=unique_topic,
    )
