"""`runbell serve` delivers from a worker process (automations/service/worker.py).

The real `runbell serve` runs as a subprocess on the embedded default (memory bus,
SQLite) with a local receiver standing in for the channel. Its delivery worker is
a child process: it delivers every notification once, stores the action trail
itself, hands the service the trail events an automation watches, and when it is
killed the service starts another that delivers what is owed.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.automations.service_harness import TOKEN, failed_run
from tests.integration.http_receiver import HttpReceiver, Reply
from tests.integration.test_crash_recovery import CONFIG as CRASH_CONFIG
from tests.integration.test_crash_recovery import RUNBELL, Server

pytestmark = pytest.mark.integration

CONFIG = (
    CRASH_CONFIG  # the channel and the production-failures automation
    + """
  - name: audit
    description: watches the other automation's trail (a trail event the engine must see)
    trigger:
      type: event
      expect: ["automation.action.executed"]
      match: {resource.id: "automation.production-failures"}
    actions:
      - type: do-nothing
  - name: stopper
    trigger:
      type: event
      expect: ["ops.stop-alerts"]
    actions:
      - type: pause-automation
        automation: production-failures
  - name: ping
    trigger:
      type: event
      expect: ["ops.ping"]
    actions:
      - type: do-nothing
"""
)


def _ops(name: str) -> dict[str, object]:
    return failed_run(event=name, resource={"resource.id": "ops.console"}, related=[])


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _wait(server: Server, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until ``check()``, polling while ``runbell serve`` runs (bounded)."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        try:  # paces the loop, and fails at once if the service died
            server.proc.wait(timeout=0.05)
            raise AssertionError(f"runbell serve exited with {server.proc.returncode}")
        except subprocess.TimeoutExpired:
            pass


def _worker_of(server: Server, other_than: int | None = None) -> int:
    """The service's delivery worker pid (a new one when ``other_than`` is given)."""
    assert server.proc is not None
    pid = server.proc.pid
    found: list[int] = []

    def appeared() -> bool:
        found[:] = [child for child in _children(pid) if child != other_than]
        return bool(found)

    _wait(server, appeared, "a delivery worker process")
    return found[0]


def _trail(
    client: httpx.Client, url: str, name: str, automation: str = "production-failures"
) -> list[dict[str, object]]:
    """The trail events ``name`` about ``automation``."""
    params = {"name": name, "resource_id": f"automation.{automation}", "limit": 1000}
    answer = client.get(f"{url}/api/events", params=params)
    answer.raise_for_status()
    events: list[dict[str, object]] = answer.json()["events"]
    return events


def _firings(client: httpx.Client, url: str, automation: str) -> list[dict[str, object]]:
    answer = client.get(f"{url}/api/firings", params={"automation": automation, "limit": 1000})
    answer.raise_for_status()
    firings: list[dict[str, object]] = answer.json()["firings"]
    return firings


def test_a_worker_process_delivers_and_is_restarted_when_killed(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    server = Server(tmp_path, http_receiver)
    (tmp_path / "automations.yaml").write_text(CONFIG)
    server.start()
    try:
        worker = _worker_of(server)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(headers=headers, timeout=10) as client:
            first = [failed_run() for _ in range(20)]
            assert client.post(f"{server.url}/api/events", json=first).status_code == 202
            received = http_receiver.wait_for(20, timeout=20)
            assert sorted(r.json["message"] for r in received) == sorted(e["id"] for e in first)

            # The trail: stored by the worker, listed by the service.
            _wait(
                server,
                lambda: len(_trail(client, server.url, "automation.action.executed")) == 20,
                "the executed trail",
            )
            assert len(_trail(client, server.url, "automation.action.triggered")) == 20
            # The trail events an automation watches reached the service's engine.
            _wait(
                server,
                lambda: len(_firings(client, server.url, "audit")) == 20,
                "the audit automation's firings",
            )

            os.kill(worker, signal.SIGKILL)
            replacement = _worker_of(server, other_than=worker)
            assert replacement != worker

            second = [failed_run() for _ in range(10)]
            assert client.post(f"{server.url}/api/events", json=second).status_code == 202
            received = http_receiver.wait_for(30, timeout=30)
            delivered = [r.json["message"] for r in received]
            assert sorted(set(delivered)) == sorted(e["id"] for e in first + second)

            # A pause-automation action runs in the worker; the service's engine obeys
            # it from its next batch: failed runs after it notify no one.
            assert client.post(f"{server.url}/api/events", json=_ops("ops.stop-alerts")).is_success
            _wait(
                server,
                lambda: len(_trail(client, server.url, "automation.action.executed", "stopper")),
                "the pause",
            )
            third = [*(failed_run() for _ in range(5)), _ops("ops.ping")]
            assert client.post(f"{server.url}/api/events", json=third).status_code == 202
            _wait(server, lambda: len(_firings(client, server.url, "ping")) == 1, "the ping")
            # Paused: the five firings are recorded, their actions suppressed.
            firings = _firings(client, server.url, "production-failures")
            assert len(firings) == 35
            assert sum(1 for f in firings if f["silenced"]) == 5
            assert len(http_receiver.requests) == len(received)  # nothing more sent
    finally:
        server.stop()
    # The service stopped its worker before it exited.
    assert not Path(f"/proc/{replacement}").exists()


def test_when_the_service_dies_the_worker_records_what_was_in_flight_and_exits(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """kill -9 of the service while three notifications hang at the target: the worker
    lets them finish, records them (the trail it cannot hand over is not waited for)
    and exits well within its 10 s grace; the next service owes nothing again."""
    http_receiver.always("/hook", Reply(hang=2.0))
    server = Server(tmp_path, http_receiver)
    (tmp_path / "automations.yaml").write_text(CONFIG)
    server.start()
    worker = _worker_of(server)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    events = [failed_run() for _ in range(3)]
    with httpx.Client(headers=headers, timeout=10) as client:
        assert client.post(f"{server.url}/api/events", json=events).status_code == 202
    http_receiver.wait_for(3, timeout=20)  # all three are now hanging at the target
    exited = os.pidfd_open(worker)  # readable once the worker has exited
    try:
        started = time.monotonic()
        server.kill()
        readable, _, _ = select.select([exited], [], [], 30)
        assert readable, "the worker outlived its service by 30 s"
        assert time.monotonic() - started < 6  # the 2 s hang, not the 10 s grace
    finally:
        os.close(exited)

    server.start()
    with httpx.Client(headers=headers, timeout=10) as client:
        _wait(
            server,
            lambda: (
                sum(
                    d["status"] == "sent"
                    for d in client.get(f"{server.url}/api/deliveries").json()["deliveries"]
                )
                == 3
            ),
            "three deliveries recorded as sent",
        )
    server.stop()
    assert len(http_receiver.requests) == 3  # none sent again


def test_with_external_delivery_only_a_worker_started_on_its_own_delivers(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """RUNBELL_DELIVERY=external: serve runs no dispatcher; `runbell deliver` delivers."""
    server = Server(tmp_path, http_receiver)
    server.env["RUNBELL_DELIVERY"] = "external"
    server.start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        assert server.proc is not None
        assert _children(server.proc.pid) == []  # no worker of its own
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(headers=headers, timeout=10) as client:
            runs = [failed_run() for _ in range(5)]
            assert client.post(f"{server.url}/api/events", json=runs).status_code == 202
            _wait(
                server,
                lambda: len(_firings(client, server.url, "production-failures")) == 5,
                "the firings",
            )
            answer = client.get(f"{server.url}/api/deliveries", params={"limit": 100})
            statuses = [d["status"] for d in answer.json()["deliveries"]]
            assert statuses == ["pending"] * 5  # owed, and nobody here delivers them
            assert http_receiver.requests == []

            config = str(tmp_path / "automations.yaml")
            worker = subprocess.Popen(
                [str(RUNBELL), "deliver", "--config", config],
                env=server.env,
                stdout=server.log,
                stderr=server.log,
            )
            received = http_receiver.wait_for(5, timeout=20)
            assert sorted(r.json["message"] for r in received) == sorted(e["id"] for e in runs)
            worker.terminate()
            assert worker.wait(timeout=20) == 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        server.stop()


def _gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether ``pid`` exits within ``timeout``: its pidfd turns readable when it does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def test_a_worker_whose_service_died_while_it_started_does_not_outlive_it(
    tmp_path: Path,
) -> None:
    """Orphaned before it ran, or while it waited for the delivery lock: it exits."""
    database = tmp_path / "runbell.db"
    env = {**os.environ, "RUNBELL_DATABASE_URL": f"sqlite:///{database}"}
    worker = [sys.executable, "-m", "automations.service.worker"]
    # The service named itself, but is no longer the parent (it died before this ran).
    assert subprocess.run([*worker, "--supervised-by", "1"], env=env, timeout=60).returncode == 0

    # Orphaned while it waits for the lock a predecessor holds (here: this test).
    with (tmp_path / "runbell.db.delivery.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        service = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import os, signal, subprocess\n"
                f"p = subprocess.Popen({worker!r} + ['--supervised-by', str(os.getpid())])\n"
                "print(p.pid, flush=True)\n"
                "signal.pause()\n",  # until the test kills it
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert service.stdout is not None
        pid = int(service.stdout.readline())
        service.kill()  # as a kill -9 of the service would
        service.wait(timeout=10)
        assert _gone(pid), "the orphaned worker is still running"
