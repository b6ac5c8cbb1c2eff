"""runbell latency: POST /api/events of a failed-run event → Slack payload at the receiver.

What one run does (see bench/README.md, "bench: latency"):

For each set-up (``embedded``: memory:// bus + SQLite; ``kafka``: Tansu + PostgreSQL)
``runbell serve`` runs in a subprocess with one automation (``flow-run.Failed``
tagged ``tag.bench``) whose ``notify`` action goes to a **Slack incoming-webhook
channel** pointed at a local receiver. For each offered rate (default 100 and
1,000 events/s) a load generator, a separate process, sends one event per
``POST /api/events`` **open loop**: event i is due at t0 + i/rate whatever the
earlier requests are doing, and a pool of keep-alive connections (``--senders``)
sends whatever is due. The receiver, a third process, timestamps each Slack
payload when its body has arrived and reads the event id from the message text.

Clocks: every process stamps with ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one
clock for the whole machine), so arrival - send is a valid cross-process difference.

Latency per event = receiver arrival - the moment its POST started to be written
(``from send``); ``from schedule`` uses the due time instead, so a generator or a
service that falls behind is charged for it (no coordinated omission).

Usage: .venv/bin/python bench/latency.py [--rates 100,1000] [--duration 20]
       [--only embedded,kafka] [--senders 32] [--drain 30] [--py-spy BIN] [--out FILE]
Internal: ``latency.py receiver PORT`` and ``latency.py gen ...`` are the two helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
SOURCE = ""  # set by --commit: an exported tree the service imports first
SELF = Path(__file__).resolve()
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The message carries the event id; the receiver finds it with EVENT_ID_RE.
AUTOMATIONS_YAML = """
channels:
  slack:
    slack:
      webhook_url: "{hook}"
automations:
  - name: bench-latency
    trigger:
      type: event
      posture: Reactive
      expect: ["flow-run.Failed"]
      match: {{resource.id: "flow-run.*"}}
      match_related: {{resource.role: tag, resource.id: "tag.bench"}}
    actions:
      - type: notify
        channel: slack
        subject: "Run {{{{ event.resource['resource.name'] }}}} failed (evt={{{{ event.id }}}})"
        body: "{{{{ event.resource['state-message'] }}}}"
"""
EVENT_ID_RE = re.compile(rb"evt=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


# == the receiver (its own process) =========================================================
async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def serve_receiver(port: int) -> None:
    """Slack incoming-webhook stand-in: answers ``ok`` and stamps each payload's arrival."""
    arrivals: list[tuple[str, int]] = []
    unparsed = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await _read_request(reader)
                at = time.monotonic_ns()
                if head.startswith(b"POST"):
                    found = EVENT_ID_RE.search(body)
                    if found:
                        arrivals.append((found[1].decode(), at))
                    else:
                        unparsed[0] += 1
                    reply = b"ok"
                elif head.startswith(b"GET /count"):
                    reply = str(len(arrivals)).encode()
                else:  # GET /dump
                    reply = orjson.dumps({"arrivals": arrivals, "unparsed": unparsed[0]})
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(reply)).encode()
                    + b"\r\n\r\n"
                    + reply
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, h.HOST, port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def receiver_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(h.HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        _, body = await _read_request(reader)
        return body
    finally:
        writer.close()


# == the load generator (its own process) ====================================================
async def generate(args: argparse.Namespace) -> None:
    """Open loop: event i is due at t0 + i/rate; ``senders`` keep-alive connections send
    what is due (one request in flight each). Writes one row per event to ``--out``."""
    count = int(args.rate * args.duration)
    host, port = args.host, args.port
    now = datetime.now(UTC).isoformat()
    bodies = [orjson.dumps(h.failed_run(args.run, i, now)) for i in range(count)]
    ids = [orjson.loads(b)["id"] for b in bodies]
    head = (
        f"POST /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {args.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    sched = [0] * count
    sent = [0] * count
    answered = [0] * count
    status = [0] * count
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def sender() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                i = await queue.get()
                if i < 0:
                    return
                if time.monotonic_ns() > stop_at:
                    continue
                body = bodies[i]
                sent[i] = time.monotonic_ns()
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                reply, _ = await _read_request(reader)
                answered[i] = time.monotonic_ns()
                status[i] = int(reply.split(b" ", 2)[1])
        finally:
            writer.close()

    tasks = [asyncio.create_task(sender()) for _ in range(args.senders)]
    await asyncio.sleep(0.3)  # connections open
    period = 1_000_000_000 / args.rate
    t0 = time.monotonic_ns() + 50_000_000
    # A service that falls behind leaves due events queued here; whatever has not been
    # sent ``grace`` seconds after the schedule ends is not sent (status 0, "not sent"),
    # so an overloaded set-up cannot stretch the run.
    stop_at = t0 + int((args.duration + args.grace) * 1e9)
    for i in range(count):
        due = t0 + int(i * period)
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        sched[i] = due
        queue.put_nowait(i)
    for _ in tasks:
        queue.put_nowait(-1)
    await asyncio.gather(*tasks)
    Path(args.out).write_bytes(  # noqa: ASYNC240 (after the timed part)
        orjson.dumps(
            {"ids": ids, "sched": sched, "sent": sent, "answered": answered, "status": status}
        )
    )


# == the bench driver =======================================================================
def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the service's delivery worker)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def machine_ticks() -> tuple[int, int]:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 100)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class RunResult:
    setup: str
    rate: int
    duration_s: float
    offered: int = 0
    sent: int = 0  # POSTs started (the rest were still queued when the grace ran out)
    accepted: int = 0
    arrived: int = 0
    duplicates: int = 0
    achieved_send_eps: float = 0.0  # POSTs started per second
    achieved_accept_eps: float = 0.0  # 202s per second
    notify_eps: float = 0.0  # arrivals per second (first → last arrival)
    e2e_from_send_ms: dict[str, float] = field(default_factory=dict)
    e2e_from_schedule_ms: dict[str, float] = field(default_factory=dict)
    post_ms: dict[str, float] = field(default_factory=dict)  # POST → 202
    send_lag_ms: dict[str, float] = field(default_factory=dict)  # due → POST started
    drain_s: float = 0.0  # last POST answered → last notification arrived
    cpu_cores: dict[str, float] = field(default_factory=dict)
    by_second_p99_ms: list[float] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    error: str | None = None


def summary(values_ns: list[int]) -> dict[str, float]:
    ms = sorted(v / 1e6 for v in values_ns)
    if not ms:
        return {}
    return {
        "n": len(ms),
        "p50": round(pct(ms, 50), 2),
        "p90": round(pct(ms, 90), 2),
        "p99": round(pct(ms, 99), 2),
        "max": round(ms[-1], 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


@contextlib.contextmanager
def serve(workdir: Path, receiver_port: int, *, bus_url: str, database_url: str) -> Any:
    """``runbell serve`` notifying the receiver's fake Slack; yields its port and pid."""
    hook = f"http://{h.HOST}:{receiver_port}/services/T0BENCH/B0BENCH/bench"
    extra_env = {}
    if SOURCE:  # --commit: the service imports that commit's tree, not the working tree
        extra_env["PYTHONPATH"] = os.pathsep.join(
            [SOURCE, os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
    with h.runbell_serve(
        workdir,
        bus_url=bus_url,
        database_url=database_url,
        automations_yaml=AUTOMATIONS_YAML.format(hook=hook),
        extra_env=extra_env,
    ) as (url, pid):
        yield urlsplit(url).port, pid


def profiler(args: argparse.Namespace, workdir: Path, pid: int, name: str) -> Any:
    return h.py_spy(
        args.py_spy,
        pid,
        Path(args.profile_dir) / f"latency-{name}.folded",
        workdir / f"py-spy-{name}.log",
    )


# Where the service's main thread (its one event loop) spends its samples, by stage:
# the first marker found in a stack names the stage.
STAGES = (
    ("dispatcher: Slack POST (SlackNotifier.send)", ("SlackNotifier.send",)),
    ("dispatcher: other (claim, render, record)", ("Dispatcher.", "automations/delivery/actions/")),
    ("engine (bus consumer → firings, outbox)", ("Service._engine_batch",)),
    ("API: POST /api/events handler (parse, ingest)", ("post_events",)),
    ("API: uvicorn/FastAPI request plumbing", ("run_asgi", "H11Protocol", "HttpToolsProtocol")),
    ("event loop: waiting in epoll", ("EpollSelector.select",)),
)


def profile_summary(folded: Path, top: int = 25) -> dict[str, Any]:
    """Main-thread samples by stage, the top self frames, and the other threads' share."""
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in folded.read_text().splitlines():
            stack, _, n_text = line.rpartition(" ")
            frames = stack.split(";")
            n = int(n_text)
            name = frames[0].split(": ", 1)[-1]
            threads[name.split(" (")[0]] += n
            if name != "MainThread" or len(frames) < 2:
                continue
            total += n
            leaves[re.sub(r":\d+\)", ")", frames[-1])] += n
            joined = ";".join(frames[1:])
            stage = next(
                (label for label, marks in STAGES if any(m in joined for m in marks)), "other"
            )
            stages[stage] += n
    if not total:
        return {"main_thread_samples": 0}
    return {
        "main_thread_samples": total,
        "main_thread_by_stage_pct": {k: round(v * 100 / total, 1) for k, v in stages.most_common()},
        "main_thread_top_self_pct": {
            k: round(v * 100 / total, 1) for k, v in leaves.most_common(top)
        },
        "samples_by_thread": dict(threads.most_common(12)),
    }


async def wait_arrivals(receiver_port: int, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        seen = int(await receiver_get(receiver_port, "/count"))
        if seen >= target or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


async def one_run(
    args: argparse.Namespace,
    setup: str,
    rate: int,
    duration: float,
    api_port: int,
    service_pid: int,
    receiver: tuple[int, int],
    workdir: Path,
    *,
    measured: bool = True,
) -> RunResult:
    receiver_port, receiver_pid = receiver
    result = RunResult(setup, rate, duration)
    before = int(await receiver_get(receiver_port, "/count"))
    out = workdir / f"gen-{setup}-{rate}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        str(SELF),
        "gen",
        "--host",
        h.HOST,
        "--port",
        str(api_port),
        "--token",
        h.TOKEN,
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--senders",
        str(args.senders),
        "--run",
        f"{setup}-{rate}-{uuid4().hex[:6]}",
        "--out",
        str(out),
    ]
    pids = {"service": service_pid, "receiver": receiver_pid}
    for worker in children(service_pid):  # the delivery worker: its own process and core
        pids["delivery worker"] = worker
    cpu0 = {k: cpu_ticks(p) for k, p in pids.items()}
    busy0, total0 = machine_ticks()
    t0 = time.monotonic()
    name = f"{setup}-{rate}"
    spy = profiler(args, workdir, service_pid, name) if measured else contextlib.nullcontext()
    with spy as folded:
        log = (workdir / f"gen-{name}.log").open("ab")
        gen = subprocess.Popen(cmd, stderr=log)  # noqa: ASYNC220 (returns at once)
        pids["generator"] = gen.pid
        gen_ticks = 0
        while gen.poll() is None:  # sample the generator's CPU while it lives
            gen_ticks = cpu_ticks(gen.pid) or gen_ticks
            await asyncio.sleep(0.2)
        load_wall = time.monotonic() - t0
        log.close()
        if gen.returncode != 0:
            raise RuntimeError(f"load generator exited {gen.returncode}: see {workdir}/gen-*.log")
        data = orjson.loads(out.read_bytes())
        ok = [i for i, s in enumerate(data["status"]) if s == 202]
        result.offered = len(data["ids"])
        result.sent = sum(1 for t in data["sent"] if t)
        result.accepted = len(ok)
        arrived_n = await wait_arrivals(receiver_port, before + result.accepted, args.drain)
    if folded is not None:
        result.profile = profile_summary(folded)
    busy1, total1 = machine_ticks()
    wall = time.monotonic() - t0
    cpu = {k: (cpu_ticks(p) - cpu0.get(k, 0)) / CLK_TCK for k, p in pids.items()}
    cpu["generator"] = gen_ticks / CLK_TCK
    result.cpu_cores = {k: round(v / load_wall, 2) for k, v in cpu.items() if k != "service"}
    # "service": the core and its delivery worker together (the table's "cores").
    result.cpu_cores["service"] = round((cpu["service"] + cpu.get("delivery worker", 0)) / wall, 2)
    if "delivery worker" in cpu:
        result.cpu_cores["service core"] = round(cpu["service"] / wall, 2)
        result.cpu_cores["delivery worker"] = round(cpu["delivery worker"] / wall, 2)
    machine_cores = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
    result.cpu_cores[f"machine (of {os.cpu_count()})"] = round(machine_cores, 2)
    # Everything else on the machine: broker + database on Kafka, and any other workload.
    result.cpu_cores["rest of machine"] = round(
        max(0.0, machine_cores - sum(result.cpu_cores[k] for k in pids)), 2
    )

    dump = orjson.loads(await receiver_get(receiver_port, "/dump"))
    ids = data["ids"]
    index = {ids[i]: i for i in ok}
    seen: Counter[str] = Counter()
    arrival: dict[int, int] = {}
    for event_id, at in dump["arrivals"]:
        i = index.get(event_id)
        if i is None:
            continue
        seen[event_id] += 1
        arrival.setdefault(i, at)
    result.arrived = len(arrival)
    result.duplicates = sum(c - 1 for c in seen.values())
    sent, sched, answered = data["sent"], data["sched"], data["answered"]
    started = [t for t in sent if t]
    first, last = min(started), max(started)
    result.achieved_send_eps = round((len(started) - 1) / ((last - first) / 1e9), 1)
    last_202 = max(answered[i] for i in ok) if ok else last
    result.achieved_accept_eps = round(result.accepted / ((last_202 - first) / 1e9), 1)
    if arrival:
        times = sorted(arrival.values())
        span = (times[-1] - times[0]) / 1e9
        result.notify_eps = round((len(times) - 1) / span, 1) if span else 0.0
        result.drain_s = round(max(0, times[-1] - last_202) / 1e9, 3)
    result.e2e_from_send_ms = summary([arrival[i] - sent[i] for i in arrival])
    result.e2e_from_schedule_ms = summary([arrival[i] - sched[i] for i in arrival])
    result.post_ms = summary([answered[i] - sent[i] for i in ok])
    result.send_lag_ms = summary([sent[i] - sched[i] for i in range(result.offered) if sent[i]])
    per_second: dict[int, list[int]] = {}
    for i in arrival:
        per_second.setdefault(int((sched[i] - sched[0]) // 1_000_000_000), []).append(
            arrival[i] - sent[i]
        )
    result.by_second_p99_ms = [
        round(pct(sorted(v / 1e6 for v in per_second[s]), 99), 1) for s in sorted(per_second)
    ]
    if result.arrived < result.accepted or result.accepted < result.offered:
        result.error = (
            f"{result.sent}/{result.offered} sent, {result.accepted} accepted, "
            f"{result.arrived} notifications "
            f"arrived ({arrived_n - before} payloads at the receiver) within {args.drain:.0f} s"
        )
    if measured:
        s, q = result.e2e_from_send_ms, result.e2e_from_schedule_ms
        print(
            f"  {setup} @ {rate}/s: p50 {s.get('p50')} ms, p99 {s.get('p99')} ms, "
            f"max {s.get('max')} ms (from schedule: p99 {q.get('p99')}); "
            f"sent {result.achieved_send_eps:,.0f}/s, {result.arrived}/{result.offered} arrived, "
            f"drain {result.drain_s:.2f} s; POST p99 {result.post_ms.get('p99')} ms; "
            f"cores {result.cpu_cores}" + (f"  ERROR: {result.error}" if result.error else ""),
            flush=True,
        )
        if result.profile and result.profile.get("main_thread_by_stage_pct"):
            stages = result.profile["main_thread_by_stage_pct"]
            print(f"    service main thread by stage (%): {stages}", flush=True)
    return result


async def run_setup(
    args: argparse.Namespace,
    setup: str,
    api_port: int,
    pid: int,
    receiver: tuple[int, int],
    workdir: Path,
) -> list[RunResult]:
    # Warm-up (not measured): the first firing (consumer-group joins on Kafka, lazy
    # imports, connection pools), then a short burst at the lowest rate.
    started = time.monotonic()
    warm = await one_run(args, setup, 20, 1, api_port, pid, receiver, workdir, measured=False)
    if warm.error:
        raise RuntimeError(f"warm-up: {warm.error}")
    await one_run(args, setup, min(args.rates), 2, api_port, pid, receiver, workdir, measured=False)
    print(f"  {setup}: warm-up {time.monotonic() - started:.1f} s", flush=True)
    results = []
    for rate in args.rates:
        results.append(
            await one_run(args, setup, rate, args.duration, api_port, pid, receiver, workdir)
        )
        await asyncio.sleep(1)
    return results


async def bench_embedded(args: argparse.Namespace, receiver: tuple[int, int]) -> list[RunResult]:
    with h.tempdir() as tmp:
        workdir = Path(tmp)
        db = workdir / "runbell.db"
        with serve(workdir, receiver[0], bus_url="memory://", database_url=f"sqlite:///{db}") as (
            port,
            pid,
        ):
            try:
                return await run_setup(args, "embedded", port, pid, receiver, workdir)
            finally:
                keep_logs(args, workdir, "embedded")


async def bench_kafka(
    args: argparse.Namespace, receiver: tuple[int, int], info: dict[str, Any]
) -> list[RunResult]:
    info["versions"]["tansu"] = h.tansu_version()
    with h.tempdir() as tmp:
        workdir = Path(tmp)
        with h.tansu(workdir) as broker:
            async with h.postgres_database() as (dsn, pg_version):
                info["postgres"] = pg_version
                database_url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
                with serve(
                    workdir, receiver[0], bus_url=f"kafka://{broker}", database_url=database_url
                ) as (port, pid):
                    try:
                        return await run_setup(args, "kafka", port, pid, receiver, workdir)
                    finally:
                        keep_logs(args, workdir, "kafka")


def keep_logs(args: argparse.Namespace, workdir: Path, setup: str) -> None:
    if args.keep_logs:
        target = Path(args.keep_logs)
        target.mkdir(parents=True, exist_ok=True)
        for log in workdir.glob("*.log"):
            (target / f"{setup}-{log.name}").write_bytes(log.read_bytes())


def source_info(commit: str | None) -> dict[str, Any]:
    def git(*a: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return done.stdout.strip()

    if commit:
        return {"commit": git("rev-parse", commit), "tree": "exported commit (--commit)"}
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "tree": "working tree", "dirty": dirty}


def table(results: list[RunResult], target_ms: float) -> str:
    lines = [
        f"{'set-up':<9} {'offered/s':>9} {'sent/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'p99 sched':>9} {'POST p99':>8} {'sent/offered':>13} {'arrived/202':>12} {'cores':>5}",
        "-" * 110,
    ]
    for r in results:
        s, q = r.e2e_from_send_ms, r.e2e_from_schedule_ms
        lines.append(
            f"{r.setup:<9} {r.rate:>9,} {r.achieved_send_eps:>7,.0f} {s.get('p50', 0):>8.1f} "
            f"{s.get('p99', 0):>8.1f} {s.get('max', 0):>8.1f} {q.get('p99', 0):>9.1f} "
            f"{r.post_ms.get('p99', 0):>8.1f} {f'{r.sent:,}/{r.offered:,}':>13} "
            f"{f'{r.arrived:,}/{r.accepted:,}':>12} {r.cpu_cores.get('service', 0):>5.2f}"
            + ("  !" if r.error else "")
        )
    top = max([r.rate for r in results if r.setup == "embedded"] or [0])
    emb = next((r for r in results if r.setup == "embedded" and r.rate == top), None)
    if emb is not None and top >= 1000:
        p99 = emb.e2e_from_send_ms.get("p99", float("inf"))
        met = p99 <= target_ms and not emb.error
        lines.append(
            f"\ntarget: p99 ≤ {target_ms:g} ms at {top:,}/s embedded → "
            f"{'MET' if met else 'MISSED'} (p99 {p99} ms, {emb.arrived:,}/{emb.offered:,} arrived)"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    only = set(args.only.split(","))
    started = datetime.now(UTC)
    info: dict[str, Any] = {
        "machine": h.machine(),
        "versions": h.versions(
            "runbell",
            "aiokafka",
            "sqlalchemy",
            "aiosqlite",
            "asyncpg",
            "uvicorn",
            "fastapi",
            "httpx",
        ),
    }
    print(
        f"runbell latency: {', '.join(f'{r:,}/s' for r in args.rates)} for {args.duration:g} s "
        f"each, {args.senders} senders, set-ups {args.only}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[RunResult] = []
    errors: dict[str, str] = {}
    info["source"] = source_info(args.commit)
    with h.tempdir() as tmp:
        port = h.free_port()
        with h.process(
            [sys.executable, str(SELF), "receiver", str(port)], port, Path(tmp) / "receiver.log"
        ) as receiver_proc:
            receiver = (port, receiver_proc.pid)
            for setup, run in (("embedded", bench_embedded), ("kafka", bench_kafka)):
                if setup not in only:
                    continue
                try:
                    if setup == "kafka":
                        results += await bench_kafka(args, receiver, info)
                    else:
                        results += await run(args, receiver)  # type: ignore[operator]
                except Exception as exc:
                    print(f"  {setup} FAILED: {exc!r}", flush=True)
                    errors[setup] = repr(exc)[:500]
    print()
    print(table(results, args.target_ms))
    document = {
        "started": started.isoformat(),
        "command": " ".join([".venv/bin/python", "bench/latency.py", *sys.argv[1:]]),
        "params": {
            "rates": args.rates,
            "duration_s": args.duration,
            "senders": args.senders,
            "drain_s": args.drain,
            "py_spy": bool(args.py_spy),
        },
        **info,
        "target": {"p99_ms": args.target_ms, "rate": 1000, "setup": "embedded"},
        "runs": [r.__dict__ for r in results],
        "errors": errors,
    }
    out = Path(args.out) if args.out else RESULTS / f"latency-{started:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nresults: {out}")
    return 1 if errors or any(r.error for r in results) else 0


def run(args: argparse.Namespace) -> int:
    """``--commit``: export that commit's tree for the service to import, then bench."""
    global SOURCE
    if not args.commit:
        return asyncio.run(main(args))
    with h.tempdir() as tmp:
        SOURCE = tmp
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", SOURCE], input=archive, check=True)
        return asyncio.run(main(args))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="100,1000", help="offered events/s, comma-separated")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per rate")
    parser.add_argument("--senders", type=int, default=32, help="concurrent HTTP connections")
    parser.add_argument("--drain", type=float, default=30, help="max wait for the last payloads")
    parser.add_argument("--only", default="embedded,kafka", help="which set-ups to run")
    parser.add_argument("--target-ms", type=float, default=50)
    parser.add_argument("--out", default=None, help="JSON result file (default: bench/results/)")
    parser.add_argument("--py-spy", default=None, help="py-spy binary: profile the service")
    parser.add_argument("--profile-dir", default="bench/results/profiles")
    parser.add_argument("--keep-logs", default=None, help="copy serve/generator logs here")
    parser.add_argument(
        "--commit", default=None, help="run the service from this commit (default: working tree)"
    )
    args = parser.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",")]
    return args


def parse_gen(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="latency.py gen")
    for name in ("--host", "--token", "--run", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--grace", type=float, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        serve_receiver(int(sys.argv[2]))
    elif sys.argv[1:2] == ["gen"]:
        asyncio.run(generate(parse_gen(sys.argv[2:])))
    else:
        sys.exit(run(parse(sys.argv[1:])))
