"""A real Prefect server on 127.0.0.1 (SQLite in a temp dir), in its own cached venv.

Use the ``prefect_server`` fixture (session scope)::

    def test_x(prefect_server):
        httpx.get(prefect_server.api_url + "/health")

Prefect is not one of runbell's dependencies (and would pin half of them), so
it lives in a venv of its own, created on first use and reused afterwards:
``$RUNBELL_TEST_CACHE/prefect-<version>`` (default ``~/.cache/runbell-test``),
outside the repository so a fresh clone on the same machine reuses it. A file
lock serialises concurrent test runs building it; a marker file written last
means "complete", so an interrupted build is redone. Measured on the 2-core
dev machine: about 40 s to build (pip from the local mirror), 8-20 s to start the
server (depending on load).

The server runs with the UI, analytics and the background services that would
move runs behind the tests' backs (late runs, scheduler, ...) switched off.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.http_receiver import free_port

__all__ = ["PREFECT_VERSION", "PrefectServer", "prefect_server", "prefect_venv"]

PREFECT_VERSION = "3.8.8"  # 3.9.x does not install here yet
# Prefect 3.8.8 allows fastapi<1 but passes `min_items=` to Body(), which fastapi
# removed between 0.150 and 0.156: the newest fastapi makes the server crash on import.
_CONSTRAINTS = ("fastapi<0.151",)
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 90.0
_MARKER = ".runbell-complete"
_QUIET_SERVICES = (
    "LATE_RUNS",
    "SCHEDULER",
    "FOREMAN",
    "CANCELLATION_CLEANUP",
    "PAUSE_EXPIRATIONS",
    "TRIGGERS",
    "REPOSSESSOR",
    "TASK_RUN_RECORDER",
    "EVENT_LOGGER",
)


@dataclass(frozen=True)
class PrefectServer:
    """A running server; ``api_url`` is what Prefect calls ``PREFECT_API_URL``."""

    api_url: str
    home: Path
    venv_seconds: float
    start_seconds: float


def _cache_root() -> Path:
    configured = os.environ.get("RUNBELL_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "runbell-test"


def prefect_venv(version: str = PREFECT_VERSION) -> Path:
    """The venv holding ``prefect==version``, built once per machine; returns its path."""
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"prefect-{version}"
    with (root / f"prefect-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / _MARKER).exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        # Outside the repository and without PYTHONPATH: pip must not see runbell.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        for command in (
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", f"prefect=={version}", *_CONSTRAINTS],
        ):
            subprocess.run(command, check=True, timeout=INSTALL_TIMEOUT, cwd=root, env=env)
        (venv / _MARKER).write_text(version)
    return venv


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        # Waiting on the process (not a sleep): returns early if the server died.
        try:
            process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue
        break
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"Prefect server not healthy at {url} within {START_TIMEOUT}s:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The server runs in its own session: signal the whole group it started (uvicorn children).
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server on a free port of 127.0.0.1, stopped at the end of the session."""
    started = time.monotonic()
    venv = prefect_venv()
    venv_seconds = time.monotonic() - started

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_API_URL": "",
        **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in _QUIET_SERVICES},
    }
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api_url = f"http://127.0.0.1:{port}/api"
        start = time.monotonic()
        _wait_healthy(process, api_url + "/health", log)
        yield PrefectServer(api_url, home, venv_seconds, time.monotonic() - start)
    finally:
        _stop(process)
