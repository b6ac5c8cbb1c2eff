"""kill -9 at random instants: every notification owed is delivered, none lost.

The real `runbell serve` runs as a subprocess on the embedded default (memory bus,
SQLite). A client keeps POSTing failed runs while the process is killed with
SIGKILL at random moments and restarted. Every event that got a 202 must reach
the receiver; an attempt the crash left in doubt may reach it again, but always
with the same Idempotency-Key, so a target that honours the key acts once.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.automations.service_harness import TOKEN, failed_run
from tests.integration.http_receiver import HttpReceiver, RecordedRequest, free_port

pytestmark = pytest.mark.integration

RUNBELL = Path(sys.executable).parent / "runbell"

CONFIG = """
channels:
  team:
    url: ${HOOK_URL}
automations:
  - name: production-failures
    trigger:
      type: event
      expect: ["flow-run.Failed"]
      match_related: {resource.role: tag, resource.id: "tag.production"}
    actions:
      - type: notify
        channel: team
        subject: "failed"
        body: "{{ event.id }}"
"""


class Server:
    def __init__(self, tmp_path: Path, receiver: HttpReceiver) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "automations.yaml"
        config.write_text(CONFIG)
        self.args = [str(RUNBELL), "serve", "--config", str(config), "--port", str(self.port)]
        self.env = {
            **os.environ,
            "RUNBELL_API_TOKEN": TOKEN,
            "RUNBELL_DATABASE_URL": f"sqlite:///{tmp_path / 'runbell.db'}",
            "HOOK_URL": f"json://127.0.0.1:{receiver.port}/hook",
        }
        self.log = (tmp_path / "serve.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log, stderr=self.log)
        for _ in range(300):  # bounded: 30 s
            try:
                if httpx.get(f"{self.url}/health", timeout=0.2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            try:
                self.proc.wait(timeout=0.1)
                raise AssertionError(f"runbell serve exited with {self.proc.returncode}")
            except subprocess.TimeoutExpired:
                pass
        raise AssertionError("runbell serve did not become healthy within 30 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _complete(receiver: HttpReceiver) -> list[RecordedRequest]:
    """Requests received whole: one cut off by the kill was never a delivery."""
    return [r for r in receiver.requests if isinstance(r.json, dict)]


def _post_until_killed(url: str, accepted: list[str], stop: threading.Event) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as client:
        while not stop.is_set():
            batch: list[dict[str, Any]] = [failed_run() for _ in range(5)]
            try:
                answer = client.post(f"{url}/api/events", json=batch)
            except httpx.HTTPError:
                return  # the server died under us: these may or may not be owed
            if answer.status_code == 202:
                accepted.extend(answer.json()["accepted"])


def test_kill_9_at_random_instants_loses_nothing(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """Five SIGKILLs mid-ingestion and mid-delivery; every accepted event is notified."""
    rng = random.Random(int(os.environ.get("RUNBELL_CRASH_SEED", "20261121")))
    server = Server(tmp_path, http_receiver)
    accepted: list[str] = []
    try:
        for _ in range(5):
            server.start()
            stop = threading.Event()
            poster = threading.Thread(target=_post_until_killed, args=(server.url, accepted, stop))
            poster.start()
            # Kill at a random instant: the poster keeps the server busy meanwhile.
            stop.wait(rng.uniform(0.05, 0.6))
            server.kill()
            stop.set()
            poster.join(timeout=10)
        server.start()  # the last life: recover and deliver what is owed
        assert accepted, "no event was ever accepted: the test did not exercise anything"
        owed = set(accepted)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = {r.json["message"] for r in _complete(http_receiver)}
            if owed <= seen:
                break
            with contextlib.suppress(TimeoutError):
                http_receiver.wait_for(len(http_receiver.requests) + 1, timeout=1)
        # One snapshot: events whose 202 the kill cut off may still be arriving.
        received = _complete(http_receiver)
        delivered = Counter(r.json["message"] for r in received)
        missing = owed - set(delivered)
        assert not missing, f"{len(missing)} of {len(owed)} accepted events never notified"
        keys: dict[str, set[str]] = {}
        for request in received:
            keys.setdefault(request.json["message"], set()).add(
                request.headers.get("Idempotency-Key", "")
            )
        assert all(len(k) == 1 and "" not in k for k in keys.values()), (
            "a redelivered notification must carry the same Idempotency-Key"
        )
        distinct_keys = {next(iter(k)) for k in keys.values()}
        assert len(distinct_keys) == len(delivered)
    finally:
        server.stop()
