"""runbell API: what one ``POST /api/events`` costs, and how much of it is the framework.

What one run does (see bench/README.md, "bench: POST /api/events"):

* starts one server per *setup*: the app of ``create_app`` over uvicorn on 127.0.0.1
  (as ``runbell serve`` runs it), embedded (memory:// bus, SQLite in a temp dir,
  ``RUNBELL_DELIVERY=inline``), with one automation that matches none of the posted
  events: the request is auth + body + parse + the durable insert, not a firing;
* a setup is ``[COMMIT][:route]``: the service from that commit's tree (``git
  archive``; empty = the working tree), and ``:route`` switches off the raw-ASGI fast
  path of trees that have one (``app.fast_events = None``, 3849c6e and before), so the
  same tree answers through FastAPI's route;
* each repetition posts, per setup in turn (the order rotates every repetition, so a
  host hiccup does not always land on the same setup), ``--requests`` batches of
  ``--batch`` events and ``--singles`` one-event requests from ``--concurrency``
  concurrent clients on kept-alive connections;
* reports per setup and shape the medians over repetitions of requests/s, the
  client-observed p50 latency and the server's CPU time per request (utime + stime of
  the server process from /proc, so the load generator's CPU is not counted), and the
  ratio of every setup to the first.

``inprocess`` times the framework alone: the ASGI app called directly, ingestion
stubbed, µs per request (run it from a tree, or with PYTHONPATH=<exported tree>).

Usage: .venv/bin/python bench/api_events.py inprocess [--route]
       .venv/bin/python bench/api_events.py [--setups 3849c6e,3849c6e:route,]
       [--repeat 5] [--batch 100] [--requests 100] [--singles 400] [--concurrency 4]
       [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

REPO = h.HERE.parent
RESULTS = h.HERE / "results"
TICKS = os.sysconf("SC_CLK_TCK")

# One automation that none of the posted events (flow-run.Failed) can match.
AUTOMATIONS_YAML = """
automations:
  - name: bench-nothing
    trigger:
      type: event
      posture: Reactive
      expect: ["bench.never"]
    actions:
      - type: pause-automation
        automation: bench-nothing
"""


@dataclass
class Shape:
    name: str
    events_per_request: int
    requests: int


@dataclass
class Setup:
    label: str  # as given: [COMMIT][:route]
    commit: str  # "" = working tree
    route: bool
    url: str = ""
    pid: int = 0
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def median(self, shape: str, key: str) -> float:
        return statistics.median(run[key] for run in self.runs.get(shape, []))


def parse_setup(text: str) -> Setup:
    commit, _, variant = text.partition(":")
    if variant not in ("", "route"):
        raise SystemExit(f"setup {text!r}: write COMMIT, COMMIT:route, or empty for the work tree")
    return Setup(label=text or "working tree", commit=commit, route=variant == "route")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.contextmanager
def server(setup: Setup, workdir: Path) -> Iterator[None]:
    """The setup's app over uvicorn in a child process (this script's ``serve``)."""
    env = {
        **os.environ,
        "RUNBELL_API_TOKEN": h.TOKEN,
        "RUNBELL_BUS": "memory://",
        "RUNBELL_DATABASE_URL": f"sqlite:///{workdir / 'runbell.db'}",
        "RUNBELL_DELIVERY": "inline",
    }
    if setup.commit:
        tree = workdir / "tree"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", setup.commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    config = workdir / "automations.yaml"
    config.write_text(AUTOMATIONS_YAML)
    port = h.free_port()
    cmd = [sys.executable, __file__, "serve", "--port", str(port), "--config", str(config)]
    cmd += ["--route"] if setup.route else []
    with h.process(cmd, port, workdir / "serve.log", env=env, timeout=60) as proc:
        setup.url, setup.pid = f"http://{h.HOST}:{port}", proc.pid
        yield


async def post(client: httpx.AsyncClient, bodies: list[bytes], concurrency: int) -> list[float]:
    """POST every body from ``concurrency`` clients; each request's latency in ms."""
    queue = list(reversed(bodies))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            answer = await client.post("/api/events", content=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 202:
                raise RuntimeError(f"POST /api/events → {answer.status_code}: {answer.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(
    setup: Setup, client: httpx.AsyncClient, shape: Shape, run: str, concurrency: int
) -> dict[str, float]:
    events = h.failed_runs(shape.events_per_request * shape.requests, run)
    bodies = h.batches(events, shape.events_per_request)
    cpu_before = cpu_seconds(setup.pid)
    started = time.perf_counter()
    latencies = await post(client, bodies, concurrency)
    wall = time.perf_counter() - started
    cpu = cpu_seconds(setup.pid) - cpu_before
    return {
        "requests_per_s": len(bodies) / wall,
        "events_per_s": len(events) / wall,
        "p50_ms": statistics.median(latencies),
        "server_cpu_ms_per_request": cpu * 1000 / len(bodies),
    }


async def drive(setups: list[Setup], shapes: list[Shape], args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.concurrency)
    clients = [
        httpx.AsyncClient(base_url=s.url, headers=headers, limits=limits, timeout=60)
        for s in setups
    ]
    try:
        for setup, client in zip(setups, clients, strict=True):  # warm-up: imports, caches
            for shape in shapes:
                await measure(
                    setup,
                    client,
                    Shape(shape.name, shape.events_per_request, 20),
                    f"w-{shape.name}",
                    args.concurrency,
                )
        for rep in range(args.repeat):
            turn = rep % len(setups)
            order = list(zip(setups, clients, strict=True))
            for setup, client in order[turn:] + order[:turn]:
                for shape in shapes:
                    result = await measure(
                        setup, client, shape, f"r{rep}-{shape.name}", args.concurrency
                    )
                    setup.runs.setdefault(shape.name, []).append(result)
                    print(
                        f"  rep {rep + 1} {setup.label:>16} {shape.name:>9}: "
                        f"{result['requests_per_s']:7.1f} req/s, "
                        f"{result['events_per_s']:8.0f} ev/s, "
                        f"p50 {result['p50_ms']:6.2f} ms, "
                        f"server CPU {result['server_cpu_ms_per_request']:6.3f} ms/request",
                        flush=True,
                    )
    finally:
        for client in clients:
            await client.aclose()


def report(setups: list[Setup], shapes: list[Shape]) -> dict[str, Any]:
    keys = ("requests_per_s", "p50_ms", "server_cpu_ms_per_request")
    summary: dict[str, Any] = {}
    base = setups[0]
    print("\nmedians over repetitions (ratio to the first setup)")
    for shape in shapes:
        for setup in setups:
            row = {key: round(setup.median(shape.name, key), 3) for key in keys}
            row.update(
                {
                    f"{key}_ratio": round(
                        setup.median(shape.name, key) / base.median(shape.name, key), 3
                    )
                    for key in keys
                }
            )
            summary.setdefault(shape.name, {})[setup.label] = row
            print(
                f"  {shape.name:>9} {setup.label:>16}: {row['requests_per_s']:7.1f} req/s "
                f"({row['requests_per_s_ratio']:.3f}), p50 {row['p50_ms']:.2f} ms "
                f"({row['p50_ms_ratio']:.3f}), server CPU {row['server_cpu_ms_per_request']:.3f} "
                f"ms/request ({row['server_cpu_ms_per_request_ratio']:.3f})"
            )
    return summary


async def main(args: argparse.Namespace) -> int:
    setups = [parse_setup(text) for text in args.setups.split(",")]
    shapes = [
        Shape(f"batch{args.batch}", args.batch, args.requests),
        Shape("single", 1, args.singles),
    ]
    started = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        for setup in setups:
            workdir = Path(stack.enter_context(h.tempdir()))
            stack.enter_context(server(setup, workdir))
        await drive(setups, shapes, args)
    document = {
        "bench": "api_events",
        "started": started.isoformat(),
        "machine": h.machine(),
        "args": vars(args),
        "setups": [
            {"label": s.label, "commit": s.commit, "route": s.route, "runs": s.runs} for s in setups
        ],
        "medians": report(setups, shapes),
    }
    out = Path(args.out) if args.out else RESULTS / f"api-events-{started:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nresults: {out}")
    return 0


def serve(argv: list[str]) -> None:
    """The server child: ``create_app`` over uvicorn, as ``runbell serve`` runs it."""
    parser = argparse.ArgumentParser(prog="api_events.py serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--route", action="store_true", help="switch off the ASGI fast path")
    args = parser.parse_args(argv)

    import uvicorn

    from automations.service import Service
    from automations.service.api import create_app
    from automations.service.settings import Settings
    from automations.service.wiring import load_or_exit

    settings = Settings.from_env(config_paths=(Path(args.config),))
    loaded = load_or_exit(list(settings.config_paths), settings.env, exit_code=2)
    app = create_app(Service(settings, loaded), settings.api_token or "")
    if args.route:
        if getattr(app, "fast_events", None) is None:
            raise SystemExit("--route: this tree has no fast path to switch off")
        app.fast_events = None  # type: ignore[attr-defined]
    uvicorn.run(app, host=h.HOST, port=args.port, log_level="warning", access_log=False)


async def _asgi_post(app: Any, body: bytes, token: str) -> None:
    """One POST /api/events straight into the ASGI app (no socket, no HTTP parsing)."""
    headers = [
        (b"host", b"bench"),
        (b"authorization", b"Bearer " + token.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/events",
        "raw_path": b"/api/events",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": (h.HOST, 80),
        "client": (h.HOST, 1),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [202]:
        raise RuntimeError(f"in-process POST answered {statuses}")


def inprocess(argv: list[str]) -> None:
    """The framework alone: the app called in-process with ingestion stubbed (returns the
    ids), so what is timed is routing, auth, body, parse and the answer; µs per request."""
    parser = argparse.ArgumentParser(prog="api_events.py inprocess")
    parser.add_argument("--route", action="store_true", help="switch off the ASGI fast path")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    from types import SimpleNamespace

    from automations.service.api import create_app

    class Ingest:
        settings = SimpleNamespace(max_body_bytes=10_000_000)

        async def ingest(self, events: list[Any]) -> list[Any]:
            return [event.id for event in events]

    app = create_app(Ingest(), "bench", manage_lifecycle=False)  # type: ignore[arg-type]
    if args.route:
        app.fast_events = None  # type: ignore[attr-defined]

    async def run() -> None:
        for name, size, count in (("single", 1, 2000), ("batch100", 100, 100)):
            body = orjson.dumps(h.failed_runs(size, "p") if size > 1 else h.failed_run("p", 0))
            for _ in range(count // 5):
                await _asgi_post(app, body, "bench")
            reps = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                for _ in range(count):
                    await _asgi_post(app, body, "bench")
                reps.append((time.perf_counter() - started) / count * 1e6)
            print(
                f"{name}: median {statistics.median(reps):.1f} µs/request "
                f"({' / '.join(f'{r:.0f}' for r in reps)})"
            )

    asyncio.run(run())


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--setups",
        default="",
        help="comma-separated [COMMIT][:route]; empty = the working tree (default)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="events per batched request")
    parser.add_argument("--requests", type=int, default=100, help="batched requests per rep")
    parser.add_argument("--singles", type=int, default=400, help="one-event requests per rep")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", default=None, help="JSON result file (default: bench/results/)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
    elif sys.argv[1:2] == ["inprocess"]:
        inprocess(sys.argv[2:])
    else:
        sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
