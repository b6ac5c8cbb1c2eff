"""A real Service behind its real API, for tests: embedded or Kafka + PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from automations.service import Service
from automations.service.api import create_app
from automations.service.settings import Settings
from automations.spec.loader import load_config
from events.clock import Clock
from notifiers import Notifier

TOKEN = "test-token-0123456789"

FAILURES_YAML = """
channels:
  team:
    url: ${HOOK_URL}
automations:
  - name: production-failures
    trigger:
      type: event
      posture: Reactive
      expect: ["flow-run.Failed", "flow-run.Crashed"]
      match: {resource.id: "flow-run.*"}
      match_related: {resource.role: tag, resource.id: "tag.production"}
    actions:
      - type: notify
        channel: team
        subject: "Run {{ event.resource['resource.name'] }} failed"
        body: "{{ event.resource['state-message'] }}"
"""


def failed_run(
    *, tag: str = "tag.production", name: str = "daft-wallaby", **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": str(uuid4()),
        "occurred": "2026-11-21T11:36:31.269221Z",
        "event": "flow-run.Failed",
        "resource": {
            "resource.id": f"flow-run.{uuid4()}",
            "resource.name": name,
            "state-message": "RuntimeError: warehouse load failed",
        },
        "related": [{"resource.id": tag, "resource.role": "tag"}],
        "payload": {},
    }
    event.update(extra)
    return event


@dataclass
class Running:
    service: Service
    client: httpx.AsyncClient


@asynccontextmanager
async def running_service(
    tmp_path: Path,
    *,
    env: Mapping[str, str],
    yaml_text: str = FAILURES_YAML,
    bus_url: str = "memory://",
    database_url: str | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
    max_body_bytes: int | None = None,
    topic: str = "runbell.events",
    clock: Clock | None = None,
    public_docs: bool = False,
) -> AsyncIterator[Running]:
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(yaml_text)
    config = load_config([config_file], env)
    settings = Settings(
        bus_url=bus_url,
        database_url=database_url or f"sqlite:///{tmp_path / 'runbell.db'}",
        api_token=TOKEN,
        topic=topic,
        env=dict(env),
        public_docs=public_docs,
        **({"max_body_bytes": max_body_bytes} if max_body_bytes else {}),
    )
    service = Service(settings, config, clock=clock, notifiers=notifiers)
    app = create_app(service, TOKEN, manage_lifecycle=False)
    await service.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://runbell.test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            yield Running(service, client)
    finally:
        await service.stop()
