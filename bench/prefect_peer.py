"""Prefect's own reactive trigger evaluation on a workload written by bench/triggers.py.

Runs INSIDE the separate prefect==3.8.8 venv that bench/triggers.py creates (never
in runbell's): ``<venv>/bin/python bench/prefect_peer.py WORKLOAD.json``. Prints one
JSON object on stdout.

Adapted from the reference harness (Prefect peer, ``inproc_triggers.py``): it drives
Prefect's *real* triggers consumer message handler
(``prefect.server.events.triggers.consumer``), i.e. per message: event-id dedupe
(causal ordering, in memory) → ``ReceivedEvent.model_validate_json`` →
``reactive_evaluation()``: ``find_interested_triggers`` (index by ``expect`` +
``trigger.covers()`` per candidate) → per matching trigger a SQLite transaction
(``BEGIN IMMEDIATE``) ensure_bucket/increment/fire/remove_bucket → ``act()``, which
publishes ``automation.triggered`` + a ``TriggeredAction`` onto the in-memory bus.
Action *execution* (the actions service) is not included — runbell's side stops at
the durable outbox row too.

DB: a fresh SQLite file (aiosqlite) in a temp dir, schema via Prefect's alembic
migrations, as ``prefect server start`` does.

Workload JSON: ``{"automations": [{"name", "expect", "match", "match_related",
"for_each"}], "events": ["<ReceivedEvent JSON>", ...], "expected": ["<automation
name fired by event j>", ...], "warmup": W, "template_db": PATH}`` — labels in Prefect's
own vocabulary; the first W events are handled untimed (first-touch costs), the rest are measured.
"""

import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta

with open(sys.argv[1]) as workload_file:
    WORKLOAD = json.load(workload_file)
TEMPLATE_EXISTS = os.path.exists(WORKLOAD.get("template_db") or "")
HOME = tempfile.mkdtemp(prefix="runbell_prefect_peer_")
os.environ.update(
    {
        "PREFECT_HOME": HOME,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{HOME}/bench.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)
os.environ.pop("PREFECT_API_URL", None)

import prefect.server.events.models.automations as automation_models  # noqa: E402
from prefect.server.database import provide_database_interface  # noqa: E402
from prefect.server.events import triggers  # noqa: E402
from prefect.server.events.actions import DoNothing  # noqa: E402
from prefect.server.events.models.automations import (  # noqa: E402
    automations_session,
    create_automation,
)
from prefect.server.events.schemas.automations import Automation, EventTrigger, Posture  # noqa: E402
from prefect.server.events.schemas.events import ReceivedEvent  # noqa: E402
from prefect.server.utilities.messaging.memory import MemoryMessage  # noqa: E402


def _copy_sqlite(source, target):
    """A consistent copy, WAL included (sqlite3's online backup)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def main():
    db = provide_database_interface()
    t0 = time.perf_counter()
    template = WORKLOAD.get("template_db")
    if template and TEMPLATE_EXISTS:  # an already-migrated empty database
        _copy_sqlite(template, f"{HOME}/bench.db")
    else:
        await db.create_db()  # Prefect's alembic migrations, as `prefect server start`
        if template:
            _copy_sqlite(f"{HOME}/bench.db", template)
    t_schema = time.perf_counter() - t0

    # Setup only: create_automation's after-commit hook queues one cache-reload task per
    # automation (10,000 of them take minutes and would still be running when the
    # measurement starts). Without it the automations are simply in the database, and
    # the consumer loads them all when it starts, as a restarted Prefect server does.
    async def _no_notify(session, automation, event):
        return None

    automation_models._notify = _no_notify

    t0 = time.perf_counter()
    ids = {}
    async with automations_session(begin_transaction=True) as session:
        for spec in WORKLOAD["automations"]:
            created = await create_automation(
                session,
                Automation(
                    name=spec["name"],
                    trigger=EventTrigger(
                        expect=set(spec["expect"]),
                        match=spec["match"],
                        match_related=spec["match_related"],
                        for_each=set(spec["for_each"]),
                        posture=Posture.Reactive,
                        threshold=1,
                        within=timedelta(0),
                    ),
                    actions=[DoNothing()],
                ),
            )
            ids[created.id] = spec["name"]
    t_create = time.perf_counter() - t0
    await asyncio.sleep(0.2)

    fired = []
    orig_act = triggers.act

    async def counting_act(firing):
        fired.append(ids.get(firing.trigger.automation.id))
        await orig_act(firing)

    triggers.act = counting_act

    msgs = []
    for raw in WORKLOAD["events"]:
        ev = ReceivedEvent.model_validate_json(raw)
        msgs.append(
            MemoryMessage(data=raw.encode(), attributes={"id": str(ev.id), "event": ev.event})
        )

    warmup = WORKLOAD.get("warmup", 0)
    lat = []
    t0 = time.perf_counter()
    async with triggers.consumer(periodic_granularity=timedelta(seconds=5)) as handler:
        loaded = len(triggers.triggers)
        t_load = time.perf_counter() - t0
        for m in msgs[:warmup]:  # untimed, as on runbell's side
            await handler(m)
        t_start = time.perf_counter()
        for m in msgs[warmup:]:
            t = time.perf_counter()
            await handler(m)
            lat.append((time.perf_counter() - t) * 1000)
        t_total = time.perf_counter() - t_start

    n = len(msgs) - warmup
    print(
        json.dumps(
            {
                "prefect": __import__("prefect").__version__,
                "automations": len(WORKLOAD["automations"]),
                "triggers_loaded": loaded,
                "warmup_events": warmup,
                "events": n,
                "firings": len(fired),
                "firings_as_expected": fired == WORKLOAD["expected"],
                "total_s": t_total,
                "events_per_s": n / t_total,
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": max(lat),
                "mean_ms": sum(lat) / n,
                "setup_schema_s": t_schema,
                "setup_create_automations_s": t_create,
                "setup_consumer_load_s": t_load,
            }
        )
    )


try:
    asyncio.run(main())
finally:
    shutil.rmtree(HOME, ignore_errors=True)
