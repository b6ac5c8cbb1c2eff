"""The delivery worker: a process type that runs the dispatcher beside the service.

Why: the embedded service is one Python process, and one interpreter lock. At
1,000 events/s it used a whole core, about 40 % of it for deliveries (claim,
render, the Slack client, attempt records), so every stage queued behind the
others (bench/README.md, "bench: latency"). A second process puts the
dispatcher on the machine's other core.

Run it as ``runbell deliver`` (or ``python -m automations.service.worker``);
``runbell serve`` starts one and supervises it by default (``RUNBELL_DELIVERY``
``process``; :class:`DeliveryWorker`). It talks to nothing but the database (and,
on Kafka, the bus); the database stays the one source of truth. It claims outbox
rows, sends, and records attempts there exactly as the in-process dispatcher does
(claims are conditional updates; SQLite serialises the processes' writers).

* **Owed rows.** On SQLite it polls a read-only connection of its own every
  ``POLL_S``, in the loop's thread (``CommitPoll``: ``PRAGMA data_version``, and only
  when a commit happened since, whether an owed row is due); on PostgreSQL it listens (``LISTEN``)
  to the ``NOTIFY`` that the engine's commit (or a replay) sends in its
  transaction, and wakes once a second besides. Its own timers cover retries.
* **The trail** (``automation.action.*``, ``emit-event``). On Kafka it publishes
  it to the events topic, as the service publishes what it accepts. Embedded, it
  stores the events no automation could match itself, stamped by its own clock:
  the engine never reads them (as with ``Service.ingest_trail``), and recovery
  replaying one is harmless. The others go to the ``delivery_trail`` inbox, which
  the service drains into its ingestion (stamped there, stored, then its engine).
* **Paused flags.** A pass whose actions changed one (pause-/resume-automation)
  hands its whole trail to the inbox; the service has its engine re-read the
  paused flags before it ingests a drained batch, so the trail becomes visible
  only after the engine obeys the change. Otherwise engines re-read them every
  second (``PAUSED_REFRESH``).

Exactly one worker dispatches per SQLite database: it holds an exclusive lock on
``<database>.delivery.lock`` while it dispatches, so it may owe the rows a crash
left 'sending' at once, and a worker started after a crash waits for the one
still finishing its attempts. The database cannot do this: SQLite offers no lock
that outlives a statement yet ends with its process, and a lease row would make a
successor wait out the lease, or let a stalled owner lose it mid-send. Further
workers on one SQLite database wait as standbys; on PostgreSQL any number share
the outbox (rows left 'sending' are owed again after their lease).

``--supervised-by PID`` (what ``serve`` passes, its own pid): the worker stops when
that process is no longer its parent, also while it starts or waits for the lock,
so a worker never outlives its service. Stopping, it stops claiming, finishes and
records what is in flight, and exits. The service restarts a worker that exits by
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from automations.engine import CandidateIndex
from automations.spec import Config
from automations.state import StateStore
from automations.state.handoff import OUTBOX_CHANNEL, CommitPoll
from events.bus import EventBus
from events.clock import Clock, Stamps
from events.model import Event
from events.sql_store import SqlEventStore
from events.store import EventStore

__all__ = ["POLL_S", "DeliveryWorker", "main"]

log = structlog.get_logger("runbell.delivery")

POLL_S = 0.002  # SQLite: how often the worker asks whether rows are owed
_LISTEN_WAKE_S = 1.0  # PostgreSQL: a notification lost with its connection waits this long
_RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_HEALTHY_S = 60.0  # a worker that ran this long restarts at the first delay again
_LOCK_RETRY_S = 0.1  # a standby worker asks for the SQLite delivery lock this often
_STOP_GRACE = 15.0  # the worker's dispatcher gives in-flight attempts 10 s


class DeliveryWorker:
    """The service's side: it starts the worker process, restarts it, stops it."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None):
        """``argv``: the worker's command line (``--supervised-by <this pid>`` is appended)."""
        self._argv = [*argv, "--supervised-by", str(os.getpid())]
        self._env = env
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.started = 0  # worker processes started (restarts included)

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="runbell-delivery-worker")

    def wake(self) -> None:
        """Nothing to do: the worker learns of owed rows from the database."""

    def committed(self, _firings: Sequence[Any]) -> None:
        """Nothing to do (the dispatcher's hook): the worker sees the commit itself."""

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), _STOP_GRACE)
            except TimeoutError:
                log.error("delivery_worker_killed", pid=process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    async def _spawn(self) -> None:
        # A session of its own: Ctrl-C at a terminal signals the service's process group
        # only, and the service stops the worker (SIGTERM) after the service's own work;
        # a worker that got the SIGINT too would exit first and look like a crash.
        self._process = await asyncio.create_subprocess_exec(
            *self._argv, env=self._env, start_new_session=True
        )
        self.started += 1
        log.info("delivery_worker_started", pid=self._process.pid)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            assert self._process is not None
            since = time.monotonic()
            code = await self._process.wait()
            if self._stopping:
                return
            if time.monotonic() - since > _HEALTHY_S:
                failures = 0  # it ran for a while: start the backoff over
            delay = _RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)]
            log.error("delivery_worker_exited", code=code, restart_in_s=delay)
            failures += 1
            await asyncio.sleep(delay)
            await self._spawn()


class _Trail:
    """Where the worker's trail events go: the bus, the store, or the service's inbox."""

    def __init__(
        self,
        state: StateStore,
        store: EventStore,
        clock: Clock,
        config: Config,
        bus: EventBus | None,
    ) -> None:
        self._state = state
        self._store = store
        self._bus = bus
        self._paused_version = state.paused_version
        # The engine's index: which events some automation could match.
        self._index = CandidateIndex([a for a in config.automations if a.enabled])
        self._stamps = Stamps(clock)

    async def emit(self, events: Sequence[Event]) -> list[Any]:
        """The dispatcher's ``emit``: durable (stored, in the inbox, or acknowledged by
        the broker) on return, before the attempts are recorded."""
        ids = [e.id for e in events]
        if self._bus is not None:  # Kafka: stamped as the service stamps what it accepts
            await self._bus.publish([e.with_received(self._stamps.next()) for e in events])
            return ids
        watched = [bool(self._index.candidates(e)) for e in events]
        if self._state.paused_version != self._paused_version:
            # A pause-/resume-automation action ran in this pass: the service's engine
            # re-reads the flags before it ingests the inbox, so all of it goes there.
            self._paused_version = self._state.paused_version
            watched = [True] * len(events)
        unread = [e for e, w in zip(events, watched, strict=True) if not w]
        if unread:
            await self._store.insert([e.with_received(self._stamps.next()) for e in unread])
        await self._state.hand_trail([e for e, w in zip(events, watched, strict=True) if w])
        return ids


async def _watch(db: AsyncEngine, clock: Clock, wake: Callable[[], None]) -> None:
    """Wake the dispatcher when the database owes rows now (forever)."""
    if db.dialect.name == "sqlite":
        assert db.url.database, "a delivery worker needs a database file"
        poll = CommitPoll(db.url.database)
        seen: int | None = None
        try:
            while True:
                try:
                    seen, due = poll.owed(seen, clock.now())
                except sqlite3.Error as exc:  # the dispatcher's own timers carry on meanwhile
                    log.error("delivery_poll_failed", error=str(exc))
                    seen, due = None, False
                    await asyncio.sleep(_LISTEN_WAKE_S)
                if due:
                    wake()
                await asyncio.sleep(POLL_S)
        finally:
            poll.close()
    async with db.connect() as conn:
        listening: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg
        await listening.add_listener(OUTBOX_CHANNEL, lambda *_: wake())
        while True:
            wake()  # at start (what is owed already) and after a lost notification
            await asyncio.sleep(_LISTEN_WAKE_S)


async def _orphaned(parent: int) -> None:
    """Return once this process's parent is gone (it was reparented)."""
    while os.getppid() == parent:  # noqa: ASYNC110 (no event to wait on: the kernel's state)
        await asyncio.sleep(0.05)


async def _locked(fd: int, parent: int | None, stop: asyncio.Event) -> bool:
    """Take the exclusive delivery lock; False if stopped or orphaned while waiting.
    Tried without blocking, every ``_LOCK_RETRY_S``: a thread blocked in ``flock``
    could be neither cancelled nor left behind at exit."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if stop.is_set() or (parent is not None and os.getppid() != parent):
            return False
        await asyncio.sleep(_LOCK_RETRY_S)


async def _run_worker(args: argparse.Namespace, parent: int | None) -> int:
    from automations.delivery.channels import close_all
    from automations.service.settings import Settings
    from automations.service.wiring import (
        build_dispatcher,
        config_secrets,
        freeze_startup_heap,
        load_or_exit,
    )
    from events.bus import bus_from_url
    from events.clock import SystemClock
    from events.database import create_engine, normalise_url
    from events.sqlite_checkpoint import no_autocheckpoint
    from notifiers import Redactor, configure_logging

    settings = Settings.from_env(config_paths=tuple(Path(p) for p in args.config) or None)
    config = load_or_exit(list(settings.config_paths), settings.env, exit_code=2)
    configure_logging(Redactor(config_secrets(config)), json=args.log_json, level=args.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    url = normalise_url(settings.database_url)
    single = url.get_backend_name() == "sqlite"
    lock_file = None
    lock_path = Path(url.database + ".delivery.lock") if single and url.database else None
    if lock_path is not None:  # one worker per database: wait for a predecessor
        lock_file = lock_path.open("a")
        if not await _locked(lock_file.fileno(), parent, stop):
            lock_file.close()  # stopped, or orphaned, while waiting: nothing was claimed
            return 0

    db = create_engine(
        settings.database_url, **({"pool_size": 1, "max_overflow": 0} if single else {})
    )
    if single:
        no_autocheckpoint(db)  # the service checkpoints the WAL
    clock = SystemClock()
    state = StateStore(db)
    bus = None
    if not settings.embedded:
        bus = bus_from_url(
            settings.bus_url, topic=settings.topic, partitions=settings.kafka_partitions
        )
        await bus.start()
    trail = _Trail(state, SqlEventStore(db), clock, config, bus)
    dispatcher, channels, controllers = build_dispatcher(settings, config, state, clock, trail.emit)
    # Embedded: this is the only dispatcher on the database (the lock above), so what a
    # crash left 'sending' is owed now. Elsewhere other replicas' workers may be sending.
    await dispatcher.start(exclusive=settings.embedded)
    freeze_startup_heap()  # as the service does: no full collection walks it again
    tasks = {
        asyncio.create_task(_watch(db, clock, dispatcher.wake)),
        asyncio.create_task(stop.wait()),
    }
    if parent is not None:
        tasks.add(asyncio.create_task(_orphaned(parent)))
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for failed in results:
        if isinstance(failed, Exception):  # the worker exits; the supervisor restarts it
            log.error("delivery_watch_failed", error=str(failed))
    await dispatcher.stop()
    await channels.aclose()
    await close_all(*controllers.values())
    if bus is not None:
        await bus.stop()
    await db.dispose()
    if lock_file is not None:
        lock_file.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``runbell deliver`` / ``python -m automations.service.worker``."""
    parser = argparse.ArgumentParser(prog="python -m automations.service.worker")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--log-json", action="store_true")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--supervised-by",
        type=int,
        metavar="PID",
        help="stop when this process (the worker's parent) is gone",
    )
    args = parser.parse_args(argv)
    # The supervisor names itself: read here, os.getppid() would already be 1 (or a
    # subreaper) when the service died while this process was starting, and the
    # worker would outlive it, holding the database's delivery lock.
    parent: int | None = args.supervised_by
    if parent is not None and os.getppid() != parent:
        return 0  # orphaned before it started: there is no service to deliver for
    import typer
    import uvloop  # installed with uvicorn[standard], as `serve` runs on it

    try:
        return uvloop.run(_run_worker(args, parent))
    except typer.Exit as exc:  # a config problem, printed already
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
