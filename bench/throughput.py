"""runbell throughput: POST /api/events → firing recorded, embedded and on Kafka + PostgreSQL.

What one run does (see bench/README.md):

1. embedded: ``runbell serve`` (memory:// bus, SQLite in a temp dir);
2. kafka: a Tansu broker on a free port + a fresh ``runbell_bench_<hex>`` database
   on PostgreSQL, then ``runbell serve`` on both;
3. raw: aiokafka on the same broker, no runbell: produce N events with
   ``send_batch``, consume them with ``getmany`` + ``orjson.loads``.

For 1 and 2 the service runs as a subprocess behind uvicorn, with one automation
that fires on every event and notifies a local receiver (an Apprise ``json://``
target answering 200). After a warm-up (one event posted and its firing awaited,
which includes the ~5 s consumer-group joins on Kafka), each repetition POSTs N
fresh events in batches from C concurrent httpx clients, and is timed from the
first POST to the moment the ``firings`` table holds N more rows (polled).

Usage: .venv/bin/python bench/throughput.py [--events N] [--batch B]
       [--concurrency C] [--repeat R] [--out FILE] [--only embedded,kafka,raw]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

POLL_S = 0.02
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Rep:
    events: int
    ingest_s: float  # first POST sent → last 202 received
    e2e_s: float  # first POST sent → firings table holds N more rows
    fired_at_ingest_end: int  # firings already recorded when the last POST returned
    notifications: int  # delivered to the receiver since this set-up's warm-up (cumulative)

    @property
    def ingest_eps(self) -> float:
        return self.events / self.ingest_s

    @property
    def e2e_eps(self) -> float:
        return self.events / self.e2e_s


@dataclass
class SetupResult:
    name: str
    description: str
    warmup_s: float = 0.0
    reps: list[Rep] = field(default_factory=list)
    outbox_at_end: dict[str, int] = field(default_factory=dict)
    notifications_at_end: int = 0
    timed_s: float = 0.0  # sum of the repetitions' POST→firing times
    error: str | None = None

    @property
    def notify_eps(self) -> float:
        """Notifications delivered per second while the repetitions ran."""
        return self.reps[-1].notifications / self.timed_s if self.reps and self.timed_s else 0.0

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.reps) if self.reps else 0.0


# -- load ---------------------------------------------------------------------------------
async def post_all(client: httpx.AsyncClient, bodies: list[bytes], concurrency: int) -> None:
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            body = queue.pop()
            answer = await client.post("/api/events", content=body)
            if answer.status_code != 202:
                raise RuntimeError(f"POST /api/events → {answer.status_code}: {answer.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_firings(counter: h.FiringCounter, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        seen = await counter.firings()
        if seen >= target or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(POLL_S)


async def notifications(client: httpx.AsyncClient, receiver_port: int) -> int:
    answer = await client.get(f"http://{h.HOST}:{receiver_port}/count")
    return int(answer.text)


async def drive(
    result: SetupResult,
    base_url: str,
    counter: h.FiringCounter,
    receiver_port: int,
    args: argparse.Namespace,
) -> None:
    """Warm up, then ``args.repeat`` timed repetitions against one running service."""
    headers = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120
    ) as client:
        started = time.perf_counter()
        await post_all(client, h.batches(h.failed_runs(1, "warmup"), 1), 1)
        if await wait_firings(counter, 1, timeout=90) < 1:
            raise RuntimeError("warm-up event did not fire within 90 s")
        result.warmup_s = time.perf_counter() - started
        delivered_before = await notifications(client, receiver_port)
        for rep in range(args.repeat):
            before = await counter.firings()
            bodies = h.batches(h.failed_runs(args.events, f"r{rep}"), args.batch)
            target = before + args.events
            t0 = time.perf_counter()
            waiter = asyncio.create_task(wait_firings(counter, target, args.timeout))
            await post_all(client, bodies, args.concurrency)
            ingest_s = time.perf_counter() - t0
            fired_then = await counter.firings() - before
            seen = await waiter
            e2e_s = time.perf_counter() - t0
            if seen < target:
                raise RuntimeError(
                    f"{seen - before} of {args.events} firings after {args.timeout:.0f} s"
                )
            rep_result = Rep(
                args.events,
                ingest_s,
                e2e_s,
                fired_then,
                await notifications(client, receiver_port) - delivered_before,
            )
            result.timed_s += e2e_s
            result.reps.append(rep_result)
            print(
                f"  {result.name} rep {rep + 1}: {rep_result.e2e_eps:,.0f} ev/s POST→firing "
                f"({e2e_s:.2f} s), ingestion {rep_result.ingest_eps:,.0f} ev/s, "
                f"{fired_then} fired when the last POST returned, "
                f"{rep_result.notifications} notifications so far",
                flush=True,
            )
        result.outbox_at_end = await counter.outbox()
        result.notifications_at_end = await notifications(client, receiver_port) - delivered_before


async def bench_embedded(args: argparse.Namespace, receiver_port: int) -> SetupResult:
    result = SetupResult("embedded", "memory:// bus + SQLite (temp dir)")
    with h.tempdir() as tmp:
        workdir = Path(tmp)
        db = workdir / "runbell.db"
        hook = f"json://{h.HOST}:{receiver_port}/hook"
        with h.runbell_serve(
            workdir, bus_url="memory://", database_url=f"sqlite:///{db}", hook_url=hook
        ) as (url, pid):
            counter = h.FiringCounter(sqlite_path=db)
            with profiler(args, workdir, pid, "embedded"):
                await drive(result, url, counter, receiver_port, args)
    return result


async def bench_kafka(
    args: argparse.Namespace, receiver_port: int, broker: str, info: dict[str, Any]
) -> SetupResult:
    result = SetupResult("kafka", "Kafka (Tansu) + PostgreSQL")
    async with h.postgres_database() as (dsn, pg_version):
        info["postgres"] = pg_version
        database_url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        with h.tempdir() as tmp:
            workdir = Path(tmp)
            hook = f"json://{h.HOST}:{receiver_port}/hook"
            with h.runbell_serve(
                workdir, bus_url=f"kafka://{broker}", database_url=database_url, hook_url=hook
            ) as (url, pid):
                counter = h.FiringCounter(postgres_dsn=dsn)
                await counter.open()
                try:
                    with profiler(args, workdir, pid, "kafka"):
                        await drive(result, url, counter, receiver_port, args)
                finally:
                    await counter.close()
    return result


def profiler(args: argparse.Namespace, workdir: Path, pid: int, name: str) -> Any:
    return h.py_spy(
        args.py_spy, pid, Path(args.profile_dir) / f"{name}.folded", workdir / "py-spy.log"
    )


# -- raw aiokafka baseline -------------------------------------------------------------------
@dataclass
class RawRep:
    events: int
    produce_s: float  # first send_batch → last batch acknowledged
    consume_s: float  # first getmany that returned records → N decoded
    first_fetch: int  # records the first getmany returned (excluded from the consume rate)
    from_assign_s: float  # partitions assigned → N decoded (includes the first fetch's wait)

    @property
    def produce_eps(self) -> float:
        return self.events / self.produce_s

    @property
    def from_assign_eps(self) -> float:
        return self.events / self.from_assign_s

    @property
    def consume_eps(self) -> float:
        return (self.events - self.first_fetch) / self.consume_s if self.consume_s else 0.0


async def bench_raw(args: argparse.Namespace, broker: str) -> list[RawRep]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    partitions = 4
    reps: list[RawRep] = []
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for rep in range(args.repeat):
            topic = f"bench.raw.{os.getpid()}.{rep}"
            await admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
            )
            # The same event JSON runbell is sent, one record each, keyed by resource id.
            values = [orjson.dumps(e) for e in h.failed_runs(args.events, f"raw{rep}")]
            t0 = time.perf_counter()
            futures = []
            for p in range(partitions):
                batch = producer.create_batch()
                for value in values[p::partitions]:
                    if batch.append(key=None, value=value, timestamp=None) is None:
                        futures.append(await producer.send_batch(batch, topic, partition=p))
                        batch = producer.create_batch()
                        batch.append(key=None, value=value, timestamp=None)
                futures.append(await producer.send_batch(batch, topic, partition=p))
            await asyncio.gather(*futures)
            produce_s = time.perf_counter() - t0

            # Manual assignment: no group join (that is ~5 s on Tansu and not throughput).
            consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
                await consumer.seek_to_beginning()
                t_assign = time.perf_counter()
                seen = 0
                first = 0
                t_first = 0.0
                while seen < args.events:
                    got = await consumer.getmany(timeout_ms=1000, max_records=500)
                    n = 0
                    for records in got.values():
                        for record in records:
                            orjson.loads(record.value)
                            n += 1
                    if n and not seen:
                        t_first, first = time.perf_counter(), n
                    seen += n
                t_end = time.perf_counter()
                consume_s = t_end - t_first
            finally:
                await consumer.stop()
            raw = RawRep(args.events, produce_s, consume_s, first, t_end - t_assign)
            reps.append(raw)
            print(
                f"  raw rep {rep + 1}: produce {raw.produce_eps:,.0f} msg/s, "
                f"consume {raw.consume_eps:,.0f} msg/s from the first fetch ({first} records), "
                f"{raw.from_assign_eps:,.0f} msg/s from assign()",
                flush=True,
            )
    finally:
        await producer.stop()
        await admin.close()
    return reps


# -- report -----------------------------------------------------------------------------------


def table(results: list[SetupResult], raw: list[RawRep]) -> str:
    lines = [
        f"{'set-up':<44} {'POST→firing ev/s':>17} {'ingestion ev/s':>15} {'notify/s':>9}"
        f" {'runs':>5}",
        "-" * 94,
    ]
    for r in results:
        if r.error:
            lines.append(f"{r.name + ': ' + r.description:<44} FAILED: {r.error}")
            continue
        spread = ", ".join(f"{x.e2e_eps:,.0f}" for x in r.reps)
        lines.append(
            f"{r.name + ': ' + r.description:<44} {r.median('e2e_eps'):>17,.0f} "
            f"{r.median('ingest_eps'):>15,.0f} {r.notify_eps:>9,.0f} {len(r.reps):>5}   ({spread})"
        )
    if raw:
        produce = statistics.median(x.produce_eps for x in raw)
        consume = statistics.median(x.consume_eps for x in raw)
        lines.append(
            f"{'raw aiokafka consume (getmany)':<44} {consume:>17,.0f} {'':>25} {len(raw):>5}"
        )
        lines.append(
            f"{'raw aiokafka produce (send_batch)':<44} {produce:>17,.0f} {'':>25} {len(raw):>5}"
        )
        kafka = next((r for r in results if r.name == "kafka" and r.reps), None)
        if kafka and consume:
            lines.append(
                f"runbell-kafka / raw aiokafka consume: {kafka.median('e2e_eps') / consume:.3f}"
            )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per repetition")
    parser.add_argument("--batch", type=int, default=100, help="events per POST")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--timeout", type=float, default=180, help="max seconds per repetition")
    parser.add_argument("--only", default="embedded,kafka,raw", help="which set-ups to run")
    parser.add_argument("--out", default=None, help="JSON result file (default: bench/results/)")
    parser.add_argument("--py-spy", default=None, help="py-spy binary: profile the service")
    parser.add_argument("--profile-dir", default="bench/results/profiles")
    args = parser.parse_args()
    only = set(args.only.split(","))

    started = datetime.now(UTC)
    info: dict[str, Any] = {
        "machine": h.machine(),
        "versions": h.versions(
            "runbell",
            "aiokafka",
            "faststream",
            "sqlalchemy",
            "aiosqlite",
            "asyncpg",
            "uvicorn",
            "fastapi",
            "httpx",
            "orjson",
        ),
    }
    print(
        f"runbell throughput: {args.events:,} events x {args.repeat} reps, batches of "
        f"{args.batch}, {args.concurrency} clients, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[SetupResult] = []
    raw: list[RawRep] = []
    with h.tempdir() as tmp, h.receiver(Path(tmp)) as receiver_port:
        if "embedded" in only:
            results.append(await guarded(bench_embedded(args, receiver_port), "embedded"))
        if "kafka" in only or "raw" in only:
            info["versions"]["tansu"] = h.tansu_version()
            with h.tansu(Path(tmp)) as broker:
                if "kafka" in only:
                    results.append(
                        await guarded(bench_kafka(args, receiver_port, broker, info), "kafka")
                    )
                if "raw" in only:
                    raw = await bench_raw(args, broker)

    print()
    print(table(results, raw))
    kafka = next((r for r in results if r.name == "kafka" and r.reps), None)
    consume = statistics.median(x.consume_eps for x in raw) if raw else None
    document = {
        "started": started.isoformat(),
        "command": " ".join([".venv/bin/python", "bench/throughput.py", *sys.argv[1:]]),
        "params": {k: getattr(args, k) for k in ("events", "batch", "concurrency", "repeat")},
        **info,
        "setups": {
            r.name: {
                "description": r.description,
                "error": r.error,
                "warmup_s": round(r.warmup_s, 3),
                "median_post_to_firing_eps": round(r.median("e2e_eps"), 1),
                "median_ingestion_eps": round(r.median("ingest_eps"), 1),
                "reps": [
                    {
                        **asdict(x),
                        "e2e_eps": round(x.e2e_eps, 1),
                        "ingest_eps": round(x.ingest_eps, 1),
                    }
                    for x in r.reps
                ],
                "outbox_at_end": r.outbox_at_end,
                "notifications_received_at_end": r.notifications_at_end,
                "notifications_per_s_while_timed": round(r.notify_eps, 1),
            }
            for r in results
        },
        "raw_aiokafka": {
            "median_produce_eps": round(statistics.median(x.produce_eps for x in raw), 1)
            if raw
            else None,
            "median_consume_eps": round(consume, 1) if consume else None,
            "reps": [
                {
                    **asdict(x),
                    "produce_eps": round(x.produce_eps, 1),
                    "consume_eps": round(x.consume_eps, 1),
                    "from_assign_eps": round(x.from_assign_eps, 1),
                }
                for x in raw
            ],
        },
        "ratio_runbell_kafka_to_raw_consume": round(kafka.median("e2e_eps") / consume, 4)
        if kafka and consume
        else None,
    }
    out = Path(args.out) if args.out else (RESULTS / f"throughput-{started:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nresults: {out}")
    return 1 if any(r.error for r in results) else 0


async def guarded(run: Any, name: str) -> SetupResult:
    """A failed set-up is reported (and makes the exit code 1); the others still run."""
    try:
        return await run  # type: ignore[no-any-return]
    except Exception as exc:
        print(f"  {name} FAILED: {exc!r}", flush=True)
        return SetupResult(name, "", error=repr(exc)[:500])


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
