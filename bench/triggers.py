"""runbell trigger evaluation vs Prefect 3.8.8's, K automations, same events, same run.

What one run does (see bench/README.md, "bench: triggers"):

For every K (default 10, 1,000, 10,000) and shape:

* **A** (``same-event``): K automations all expect ``flow-run.Failed``, automation i
  watches deployment i (``match_related`` role deployment, ``resource.id`` pinned);
* **B** (``distinct-events``): automation i expects its own event name
  ``bench.signal-<i>``;

both with ``match: resource.id flow-run.*``, ``for_each: resource.id``, Reactive,
threshold 1, ``within: 0`` and one do-nothing action. Events are synthetic Prefect
events (flow-run resource, related flow/deployment/tag, a payload like Prefect's
state-change events); event j fires exactly automation ``j mod K``.

1. **runbell**: the real :class:`automations.engine.Engine` on its real
   :class:`automations.state.StateStore` (a fresh SQLite file, the embedded
   default), wall clock. Events are the normalised JSON the bus carries; the timed
   work is ``Event.model_validate_json`` + ``Engine.handle`` (which commits the
   firings, outbox rows, processed ids and trigger state before returning).
   * *latency*: L events, each its own 1-event ``handle()``; p50/p99 of those;
   * *throughput*: N events in batches of B (as the bus delivers them); ev/s =
     N / total time. Batch times are reported too, never divided into "per-event
     latencies".
   Both R times (``--repeat``, on the same engine and database, fresh events each
   time): latencies are pooled, ev/s is the median of the repetitions.
2. **Prefect**: ``bench/prefect_peer.py`` in a separate prefect==3.8.8 venv (created
   and cached under ``~/.cache/runbell-bench/prefect-3.8.8``), on the same events
   (the first P of them: Prefect is capped per K) and equivalent automations, through
   Prefect's real triggers consumer handler with its own SQLite database. Prefect
   handles one message at a time, so its ev/s and per-event p50/p99 are the same
   measurement.

Usage: .venv/bin/python bench/triggers.py [--k 10,1000,10000] [--shapes A,B]
       [--events N] [--batch B] [--latency-events L] [--repeat R]
       [--prefect-events 10:1000,1000:500,10000:200] [--no-prefect]
       [--profile DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import structlog
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automations.engine import Engine  # noqa: E402
from automations.service.wiring import freeze_startup_heap  # noqa: E402
from automations.spec import Automation, Config  # noqa: E402
from automations.state import StateStore  # noqa: E402
from events.clock import SystemClock  # noqa: E402
from events.database import create_engine  # noqa: E402
from events.model import Event  # noqa: E402
from events.sqlite_checkpoint import WalCheckpointer  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PREFECT_VERSION = "3.8.8"
PREFECT_VENV = Path(
    os.environ.get(
        "RUNBELL_BENCH_PREFECT_VENV",
        Path.home() / ".cache" / "runbell-bench" / f"prefect-{PREFECT_VERSION}",
    )
)
SHAPES = {"A": "same event, K deployments", "B": "K distinct event names"}
RECEIVED_AFTER = timedelta(milliseconds=20)
TARGET_RATIO = 100.0
TARGET_SCALING = 1.5


# -- workload -------------------------------------------------------------------------------
def _uuid(kind: str, i: int) -> str:
    return str(uuid5(NAMESPACE_URL, f"https://runbell.dev/bench/{kind}/{i}"))


def _event_id(kind: str, j: int, occurred: datetime) -> str:
    """A UUIDv7 as Prefect gives its events (``../shared/samples/prefect``: every event id
    there is version 7): 48 bits of ``occurred`` in Unix ms, the rest from a uuid5 of
    (kind, j), so the workload is the same from run to run."""
    rest = uuid5(NAMESPACE_URL, f"https://runbell.dev/bench/{kind}/{j}").int
    ms = int(occurred.timestamp() * 1000)
    value = (ms << 80) | (rest & ((1 << 80) - 1))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(UUID(int=value))


def event_name(shape: str, i: int) -> str:
    """The Prefect-side event name automation i expects."""
    return "prefect.flow-run.Failed" if shape == "A" else f"bench.signal-{i}"


def prefect_automations(shape: str, k: int) -> list[dict[str, Any]]:
    out = []
    for i in range(k):
        related: dict[str, str] = {}
        if shape == "A":
            related = {
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{_uuid('deployment', i)}",
            }
        out.append(
            {
                "name": f"bench-{shape}-{i}",
                "expect": [event_name(shape, i)],
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": related,
                "for_each": ["prefect.resource.id"],
            }
        )
    return out


def runbell_config(shape: str, k: int) -> Config:
    """The same automations in runbell's vocabulary (what `runbell import prefect` writes)."""
    automations = []
    for i in range(k):
        trigger: dict[str, Any] = {
            "type": "event",
            "posture": "Reactive",
            "expect": [_normalised_name(event_name(shape, i))],
            "match": {"resource.id": "flow-run.*"},
            "for_each": ["resource.id"],
            "threshold": 1,
            "within": 0,
        }
        if shape == "A":
            trigger["match_related"] = {
                "resource.role": "deployment",
                "resource.id": f"deployment.{_uuid('deployment', i)}",
            }
        automations.append(
            Automation.model_validate(
                {
                    "name": f"bench-{shape}-{i}",
                    "trigger": trigger,
                    "actions": [{"type": "do-nothing"}],
                }
            )
        )
    return Config(automations=automations)


def _normalised_name(name: str) -> str:
    return name.removeprefix("prefect.")


def prefect_events(shape: str, k: int, n: int, base: datetime) -> list[dict[str, Any]]:
    """n Prefect-shaped events; event j fires exactly automation j mod K."""
    out = []
    for j in range(n):
        i = j % k
        run = _uuid(f"run-{shape}-{k}", j)
        occurred = base + timedelta(microseconds=j)
        out.append(
            {
                "id": _event_id(f"event-{shape}-{k}", j, occurred),
                "occurred": occurred.isoformat(),
                # Stamped at ingestion, in arrival order (events.clock.Stamps), a little
                # after it occurred: never one instant for the whole workload.
                "received": (occurred + RECEIVED_AFTER).isoformat(),
                "event": event_name(shape, i),
                "resource": {
                    "prefect.resource.id": f"prefect.flow-run.{run}",
                    "prefect.resource.name": f"run-{j}",
                    "prefect.state-type": "FAILED",
                    "prefect.state-name": "Failed",
                    "prefect.run-count": "1",
                },
                "related": [
                    {
                        "prefect.resource.id": f"prefect.flow.{_uuid('flow', i)}",
                        "prefect.resource.role": "flow",
                        "prefect.resource.name": f"flow-{i}",
                    },
                    {
                        "prefect.resource.id": f"prefect.deployment.{_uuid('deployment', i)}",
                        "prefect.resource.role": "deployment",
                        "prefect.resource.name": f"deployment-{i}",
                    },
                    {"prefect.resource.id": "prefect.tag.bench", "prefect.resource.role": "tag"},
                ],
                "payload": {
                    "intended": {"from": "RUNNING", "to": "FAILED"},
                    "initial_state": {"type": "RUNNING", "name": "Running"},
                    "validated_state": {"type": "FAILED", "name": "Failed", "message": "boom"},
                },
            }
        )
    return out


# -- stats ----------------------------------------------------------------------------------
def pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- runbell --------------------------------------------------------------------------------
async def run_runbell(
    shape: str,
    k: int,
    bus_payloads: list[bytes],
    event_ids: list[str],
    expected: list[str],
    args: argparse.Namespace,
    workdir: Path,
    profile: cProfile.Profile | None,
    after_repetition: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """``after_repetition(r)`` runs after repetition r, untimed (the paired Prefect run)."""
    # The embedded service's SQLite set-up (automations/service/service.py): one pooled
    # connection, WAL checkpoints off it (a passive one every second from its own).
    db = create_engine(
        f"sqlite:///{workdir / f'runbell-{shape}-{k}.db'}", pool_size=1, max_overflow=0
    )
    checkpointer = WalCheckpointer(db, SystemClock())
    checkpointer.start()
    try:
        state = StateStore(db)
        await state.create_tables()
        t0 = time.perf_counter()
        config = runbell_config(shape, k)
        t_config = time.perf_counter() - t0
        t0 = time.perf_counter()
        # record=False, as `serve` runs it: the firings are checked in the database after
        # the run (a list of every Firing kept in memory would be garbage-collector work
        # the service never does).
        engine = Engine(config, state, SystemClock())
        await engine.load()
        freeze_startup_heap()  # as `serve` does once the service has started
        t_load = time.perf_counter() - t0

        warm = bus_payloads[: args.warmup]
        for raw in warm:  # connection pool, statement caches, first-touch imports
            await engine.handle([Event.model_validate_json(raw)])

        lat: list[float] = []  # pooled over the repetitions
        batch_ms: list[float] = []
        reps: list[dict[str, float]] = []
        offset = args.warmup
        for repetition in range(args.repeat):
            latency = bus_payloads[offset : offset + args.latency_events]
            offset += args.latency_events
            bulk = bus_payloads[offset : offset + args.events]
            offset += args.events
            gc.collect()
            if profile:
                profile.enable()
            rep_lat: list[float] = []
            t_lat = time.perf_counter()
            for raw in latency:
                t = time.perf_counter()
                await engine.handle([Event.model_validate_json(raw)])
                rep_lat.append((time.perf_counter() - t) * 1000)
            t_lat = time.perf_counter() - t_lat

            t_bulk = time.perf_counter()
            for start in range(0, len(bulk), args.batch):
                t = time.perf_counter()
                await engine.handle(
                    [Event.model_validate_json(raw) for raw in bulk[start : start + args.batch]]
                )
                batch_ms.append((time.perf_counter() - t) * 1000)
            t_bulk = time.perf_counter() - t_bulk
            if profile:
                profile.disable()
            lat.extend(rep_lat)
            reps.append(
                {
                    "single_events_per_s": len(latency) / t_lat,
                    "single_p50_ms": pct(rep_lat, 50),
                    "batched_events_per_s": len(bulk) / t_bulk,
                }
            )
            if after_repetition is not None:
                after_repetition(repetition)

        fired = await fired_by_event(db)
        batched = statistics.median(r["batched_events_per_s"] for r in reps)
        return {
            "automations": k,
            "setup_config_s": t_config,
            "setup_engine_load_s": t_load,
            "warmup_events": len(warm),
            "repeat": args.repeat,
            "firings": len(fired),
            "firings_as_expected": fired == dict(zip(event_ids, expected, strict=True)),
            "repetitions": reps,
            "latency": {
                "what": "1 event per handle(): model_validate_json + Engine.handle([e]), committed",
                "events": len(lat),
                "events_per_s": statistics.median(r["single_events_per_s"] for r in reps),
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": max(lat),
                "mean_ms": statistics.fmean(lat),
            },
            "throughput": {
                "what": f"batches of {args.batch}: parse + Engine.handle(batch), committed; "
                "median of the repetitions",
                "events": args.events * args.repeat,
                "batch": args.batch,
                "events_per_s": batched,
                "per_event_us_amortised": 1e6 / batched,
                "batch_p50_ms": pct(batch_ms, 50),
                "batch_p99_ms": pct(batch_ms, 99),
            },
        }
    finally:
        await checkpointer.stop()
        await db.dispose()


async def fired_by_event(db: Any) -> dict[str, str]:
    """Triggering event id → automation, for every firing committed."""
    async with db.connect() as conn:
        rows = await conn.exec_driver_sql("SELECT automation, event_ids FROM firings")
        return {json.loads(ids)[0]: automation for automation, ids in rows}


# -- Prefect --------------------------------------------------------------------------------
def prefect_python() -> Path:
    python = PREFECT_VENV / "bin" / "python"
    probe = [str(python), "-c", "from importlib.metadata import version; print(version('prefect'))"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == PREFECT_VERSION:
            return python
    print(f"creating the Prefect venv {PREFECT_VENV} (prefect=={PREFECT_VERSION}) ...", flush=True)
    PREFECT_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["python3", "-m", "venv", "--clear", str(PREFECT_VENV)], check=True)
    subprocess.run(
        [str(PREFECT_VENV / "bin" / "pip"), "install", "-q", f"prefect=={PREFECT_VERSION}"],
        check=True,
    )
    return python


def run_prefect(
    python: Path,
    shape: str,
    k: int,
    events: list[dict[str, Any]],
    expected: list[str],
    warmup: int,
    workdir: Path,
    timeout: float,
) -> dict[str, Any]:
    workload = workdir / f"prefect-{shape}-{k}.json"
    workload.write_text(
        json.dumps(
            {
                "automations": prefect_automations(shape, k),
                "events": [json.dumps(e) for e in events],
                "expected": expected,
                "warmup": warmup,
                "template_db": str(workdir / "prefect-empty.db"),
            }
        )
    )
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    try:
        done = subprocess.run(
            [str(python), str(HERE / "prefect_peer.py"), str(workload)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        workload.unlink(missing_ok=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    return dict(json.loads(lines[-1]))


def run_prefect_paired(
    runs: list[dict[str, Any]],
    python: Path,
    shape: str,
    k: int,
    events: list[dict[str, Any]],
    expected: list[str],
    args: argparse.Namespace,
    workdir: Path,
    repetition: int,
) -> None:
    """One Prefect run after runbell's repetition ``repetition``; appended to ``runs``."""
    if runs and "error" in runs[-1]:
        return
    t0 = time.perf_counter()
    pf = run_prefect(python, shape, k, events, expected, args.warmup, workdir, args.prefect_timeout)
    runs.append(pf)
    if "error" in pf:
        print(f"K={k:>6,} {shape} Prefect: {pf['error']}", flush=True)
        return
    print(
        f"K={k:>6,} {shape} Prefect run {repetition + 1}: "
        f"{pf['events_per_s']:,.1f} ev/s over {pf['events']} events, "
        f"p50 {pf['p50_ms']:.1f} ms p99 {pf['p99_ms']:.1f} ms "
        f"(firings ok: {pf['firings_as_expected']}; "
        f"{time.perf_counter() - t0:.0f} s incl. setup)",
        flush=True,
    )


def paired(rb: dict[str, Any], runs: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any]:
    """Prefect's summary over its runs, and the pairs' ratios into ``row``."""
    if any("error" in run for run in runs):
        return next(run for run in runs if "error" in run)
    pairs = list(zip(rb["repetitions"], runs, strict=False))
    batched = [r["batched_events_per_s"] / pf["events_per_s"] for r, pf in pairs]
    single = [r["single_events_per_s"] / pf["events_per_s"] for r, pf in pairs]
    row["ratio_batched"] = statistics.median(batched)
    row["ratio_single"] = statistics.median(single)
    row["pair_ratios_batched"] = batched
    row["pair_ratios_single"] = single
    middle = sorted(runs, key=lambda run: float(run["events_per_s"]))[len(runs) // 2]
    return {
        **middle,  # the median run's figures (events, p50, p99, ...)
        "events_per_s": statistics.median(float(run["events_per_s"]) for run in runs),
        "runs": runs,
        "firings_as_expected": all(run.get("firings_as_expected") for run in runs),
    }


# -- report ---------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| K | shape | runbell ev/s (batch {b}) | runbell ev/s (1-event) | runbell p50 / p99 ms "
        "| Prefect events | Prefect ev/s | Prefect p50 / p99 ms "
        "| ratio (batched) | ratio (1-event) |"
    )
    lines = [
        head.format(b=rows[0]["runbell"]["throughput"]["batch"] if rows else "?"),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        rb, pf = row["runbell"], row.get("prefect") or {}
        lat, thr = rb["latency"], rb["throughput"]
        ok = "error" not in pf and pf
        pf_lat = f"{pf['p50_ms']:.1f} / {pf['p99_ms']:.1f}" if ok else "—"
        lines.append(
            f"| {row['k']:,} | {row['shape']} | {fmt(thr['events_per_s'])} "
            f"| {fmt(lat['events_per_s'])} | {lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} "
            f"| {fmt(pf.get('events')) if ok else '—'} "
            f"| {fmt(pf.get('events_per_s'), 1) if ok else 'error'} "
            f"| {pf_lat} "
            f"| {fmt(row.get('ratio_batched'), 0) + 'x' if ok else '—'} "
            f"| {fmt(row.get('ratio_single'), 0) + 'x' if ok else '—'} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"ratio": [], "scaling": []}
    for row in rows:
        if row.get("ratio_batched") is not None:
            out["ratio"].append(
                {
                    "k": row["k"],
                    "shape": row["shape"],
                    "ratio_batched": row["ratio_batched"],
                    "met_batched": row["ratio_batched"] >= TARGET_RATIO,
                    "ratio_single": row["ratio_single"],
                    "met_single": row["ratio_single"] >= TARGET_RATIO,
                }
            )
    by = {(r["shape"], r["k"]): r for r in rows}
    ks = sorted({r["k"] for r in rows})
    if len(ks) >= 2:
        lo, hi = ks[0], ks[-1]
        for shape in sorted({r["shape"] for r in rows}):
            a, b = by.get((shape, lo)), by.get((shape, hi))
            if not (a and b):
                continue
            batched = (
                a["runbell"]["throughput"]["events_per_s"]
                / b["runbell"]["throughput"]["events_per_s"]
            )
            p50 = b["runbell"]["latency"]["p50_ms"] / a["runbell"]["latency"]["p50_ms"]
            mean = b["runbell"]["latency"]["mean_ms"] / a["runbell"]["latency"]["mean_ms"]
            out["scaling"].append(
                {
                    "shape": shape,
                    "from_k": lo,
                    "to_k": hi,
                    "cost_ratio_batched": batched,
                    "cost_ratio_single_p50": p50,
                    "cost_ratio_single_mean": mean,
                    "met": max(batched, p50) <= TARGET_SCALING,  # mean: for information
                }
            )
    out["ratio_met"] = bool(out["ratio"]) and all(v["met_batched"] for v in out["ratio"])
    out["ratio_met_single"] = bool(out["ratio"]) and all(v["met_single"] for v in out["ratio"])
    out["scaling_met"] = bool(out["scaling"]) and all(v["met"] for v in out["scaling"])
    return out


def print_verdicts(v: dict[str, Any]) -> None:
    print(f"\ntarget 1: runbell ≥ {TARGET_RATIO:.0f}x Prefect's ev/s at every K")
    for r in v["ratio"]:
        print(
            f"  K={r['k']:>6,} {r['shape']}: batched {r['ratio_batched']:,.0f}x "
            f"{'MET' if r['met_batched'] else 'MISSED'}; 1-event batches {r['ratio_single']:,.0f}x "
            f"{'MET' if r['met_single'] else 'MISSED'}"
        )
    print(f"target 2: per-event cost K=min → K=max ≤ {TARGET_SCALING}x")
    for s in v["scaling"]:
        print(
            f"  {s['shape']}: K={s['from_k']:,}→{s['to_k']:,}: "
            f"batched {s['cost_ratio_batched']:.2f}x, "
            f"1-event p50 {s['cost_ratio_single_p50']:.2f}x, "
            f"mean {s['cost_ratio_single_mean']:.2f}x "
            f"{'MET' if s['met'] else 'MISSED'}"
        )


# -- main -----------------------------------------------------------------------------------
def parse_caps(text: str) -> dict[int, int]:
    caps = {}
    for part in text.split(","):
        k, _, n = part.partition(":")
        caps[int(k)] = int(n)
    return caps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", default="10,1000,10000", help="automation counts")
    parser.add_argument("--shapes", default="A,B", help="A: same event; B: distinct events")
    parser.add_argument(
        "--events", type=int, default=20_000, help="runbell: batched events per case"
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--latency-events", type=int, default=500, help="runbell: 1-event batches")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runbell repetitions per case")
    parser.add_argument(
        "--prefect-events",
        default="10:1000,1000:500,10000:200",
        help="Prefect events per K (K:N,...); a K not listed gets the smallest cap",
    )
    parser.add_argument("--prefect-timeout", type=float, default=600.0)
    parser.add_argument("--no-prefect", action="store_true")
    parser.add_argument("--profile", type=Path, help="cProfile runbell's timed phases into DIR")
    parser.add_argument(
        "--out", type=Path, help="JSON results (default bench/results/triggers-DATE.json)"
    )
    args = parser.parse_args()

    # One log line per firing is what `serve` does too, but to stderr it would drown the
    # report; the call itself stays (structlog filters at the bound logger).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    ks = [int(k) for k in args.k.split(",")]
    shapes = [s.strip().upper() for s in args.shapes.split(",")]
    caps = parse_caps(args.prefect_events)
    python = None if args.no_prefect else prefect_python()
    started = time.perf_counter()
    load_before = os.getloadavg()
    base = datetime.now(UTC).replace(microsecond=0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runbell-bench-triggers-") as tmp:
        workdir = Path(tmp)
        for k in ks:
            for shape in shapes:
                n = args.warmup + (args.latency_events + args.events) * args.repeat
                events = prefect_events(shape, k, n, base)
                # What runbell's bus carries: the normalised event JSON (ingest normalises).
                bus = [Event.model_validate(e).to_json() for e in events]
                ids = [e["id"] for e in events]
                expected = [f"bench-{shape}-{j % k}" for j in range(n)]
                # The same warm-up events, then the first `cap` of runbell's latency events;
                # the rest of the workload's dicts are not kept around while runbell runs.
                cap = args.warmup + caps.get(k, min(caps.values()))
                events = events[:cap]
                profile = cProfile.Profile() if args.profile else None
                # Paired: after each runbell repetition, one Prefect run on the same events
                # (a fresh database each time), so each pair meets the machine in the same
                # state; the ratio quoted is the median of the pairs' ratios.
                prefect_runs: list[dict[str, Any]] = []

                prefect_run = None
                if python is not None:
                    prefect_run = partial(
                        run_prefect_paired,
                        prefect_runs,
                        python,
                        shape,
                        k,
                        events,
                        expected[:cap],
                        args,
                        workdir,
                    )

                t0 = time.perf_counter()
                # On uvloop, the event loop `runbell serve` runs on (uvicorn's).
                rb = uvloop.run(
                    run_runbell(shape, k, bus, ids, expected, args, workdir, profile, prefect_run)
                )
                del bus, ids
                row: dict[str, Any] = {"k": k, "shape": shape, "runbell": rb}
                reps_text = ", ".join(
                    f"{r['batched_events_per_s']:,.0f}" for r in rb["repetitions"]
                )
                print(
                    f"K={k:>6,} {shape} runbell: "
                    f"{rb['throughput']['events_per_s']:,.0f} ev/s batched "
                    f"(repetitions: {reps_text}), "
                    f"1-event p50 {rb['latency']['p50_ms']:.2f} ms "
                    f"p99 {rb['latency']['p99_ms']:.2f} ms "
                    f"({time.perf_counter() - t0:.0f} s with the Prefect runs)",
                    flush=True,
                )
                if profile:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    path = args.profile / f"runbell-{shape}-{k}.pstats"
                    profile.dump_stats(path)
                    text = io.StringIO()
                    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(15)
                    row["profile"] = str(path)
                    print(text.getvalue().split("\n", 6)[-1][:3000])
                if prefect_runs:
                    row["prefect"] = paired(rb, prefect_runs, row)
                rows.append(row)

    v = verdicts(rows)
    print()
    print(table(rows))
    print_verdicts(v)
    result = {
        "bench": "triggers",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_1_5_15_before": load_before,
            "loadavg_1_5_15_after": os.getloadavg(),
        },
        "versions": {
            "runbell": version("runbell"),
            "sqlalchemy": version("sqlalchemy"),
            "pydantic": version("pydantic"),
            "prefect": PREFECT_VERSION if python else None,
        },
        "settings": {
            "k": ks,
            "shapes": {s: SHAPES[s] for s in shapes},
            "events": args.events,
            "batch": args.batch,
            "latency_events": args.latency_events,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "prefect_events": caps,
        },
        "rows": rows,
        "targets": {"ratio": TARGET_RATIO, "scaling": TARGET_SCALING, **v},
        "wall_s": time.perf_counter() - started,
    }
    out = args.out or RESULTS / f"triggers-{datetime.now(UTC).date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
