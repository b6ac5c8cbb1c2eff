"""Delivery in its own process: ``runbell serve`` runs the dispatcher beside it.

Why: the embedded service is one Python process, and one interpreter lock. At
1,000 events/s it used a whole core, about 40 % of it for deliveries (claim,
render, the Slack client, attempt records), so every stage queued behind the
others (bench/README.md, "bench: latency"). A second process puts the
dispatcher on the machine's other core. The database stays the one source of
truth: the worker claims outbox rows, sends, and records attempts there exactly
as the in-process dispatcher does (claims are conditional updates; SQLite
serialises the two processes' writers).

The two processes talk over a Unix stream socket the service listens on, one
line per message:

* service → worker ``w``: intents were committed (or a delivery replayed):
  claim now. Without it the worker still wakes for retries on its own timers.
* worker → service ``p``: a pause-/resume-automation action changed a paused
  flag; the engine re-reads them before its next batch.
* worker → service ``e <n> <count>`` and then one event's JSON per line: the
  ``automation.action.*`` trail and ``emit-event`` events some automation could
  match; the service ingests them (store, then its engine) and answers ``a <n>``,
  or ``x <n> <reason>``. On the embedded bus the worker stores the others itself:
  the engine never reads them (``Service.ingest_trail``), and the service then
  parses and inserts one event per delivery instead of three.

Exactly one worker runs per database: it holds an exclusive lock on
``<database>.delivery.lock`` while it dispatches, so a worker started after a
crash waits for the one still finishing its attempts. When the service goes
away (its socket closes) the worker stops claiming, finishes and records what
is in flight, and exits. The service restarts a worker that exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from automations.engine import CandidateIndex
from automations.spec import Config
from automations.state import StateStore
from events.clock import Clock, Stamps
from events.model import Event
from events.sql_store import SqlEventStore
from events.store import EventStore

__all__ = ["DeliveryWorker", "main"]

log = structlog.get_logger("runbell.delivery")

Ingest = Callable[[Sequence[Event]], Awaitable[Any]]
_RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_HEALTHY_S = 60.0  # a worker that ran this long restarts at the first delay again
_STOP_GRACE = 15.0  # the worker's dispatcher gives in-flight attempts 10 s
_LINE_LIMIT = 64 * 1024 * 1024


class DeliveryWorker:
    """The service's side: the socket, the worker process, its restarts."""

    def __init__(
        self,
        ingest: Ingest,
        argv: Sequence[str],
        paused: Callable[[], None],
        env: dict[str, str] | None = None,
    ):
        """``argv``: the worker's command line after ``--socket PATH`` is appended;
        ``paused``: the worker changed an automation's paused flag."""
        self._ingest = ingest
        self._paused = paused
        self._argv = list(argv)
        self._env = env
        self._dir = tempfile.mkdtemp(prefix="runbell-delivery-")
        self.socket_path = os.path.join(self._dir, "delivery.sock")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.started = 0  # worker processes started (restarts included)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._serve, self.socket_path, limit=_LINE_LIMIT
        )
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="runbell-delivery-worker")

    def wake(self) -> None:
        """Tell the worker to claim now (new intents, a replay)."""
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(b"w\n")

    def committed(self, _firings: Sequence[Any]) -> None:
        """The engine committed intents (the dispatcher's hook): the worker claims them."""
        self.wake()

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
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
            os.rmdir(self._dir)

    async def _spawn(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self._argv, "--socket", self.socket_path, env=self._env
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(b"w\n")  # whatever is owed already
        try:
            while line := await reader.readline():
                kind, _, rest = line.rstrip(b"\n").partition(b" ")
                if kind == b"p":
                    self._paused()
                if kind != b"e":
                    continue
                seq, _, count = rest.partition(b" ")
                lines = [await reader.readline() for _ in range(int(count))]
                try:
                    await self._ingest([Event.model_validate_json(raw) for raw in lines])
                except Exception as exc:  # the worker logs it: the trail never blocks
                    reason = str(exc).replace("\n", " ")[:500]
                    writer.write(b"x " + seq + b" " + reason.encode() + b"\n")
                else:
                    writer.write(b"a " + seq + b"\n")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.error("delivery_link_failed", error=str(exc))
        finally:
            self._writers.discard(writer)
            writer.close()


class _Link:
    """The worker's side of the socket: wake-ups in, trail events out."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        store: EventStore,
        clock: Clock,
        config: Config,
        state: StateStore,
        *,
        embedded: bool,
    ) -> None:
        self._reader = reader
        self._state = state
        self._paused_version = state.paused_version
        self._writer = writer
        self._store = store
        # The engine's index: which events some automation could match.
        enabled = [a for a in config.automations if a.enabled]
        self._index = CandidateIndex(enabled) if embedded else None
        self._stamps = Stamps(clock)
        self._seq = 0
        self._waiting: dict[bytes, asyncio.Future[None]] = {}
        self._closed = False

    async def emit(self, events: Sequence[Event]) -> list[Any]:
        """Store the trail here when no automation could match it (on the embedded bus,
        the engine never reads those: ``Service.ingest_trail``); the service ingests
        the rest, so that its engine sees them."""
        ids = [e.id for e in events]
        if self._state.paused_version != self._paused_version:
            # A pause-/resume-automation action ran here: the service's engine re-reads
            # the paused flags before its next batch, as it would in one process.
            self._paused_version = self._state.paused_version
            self._writer.write(b"p\n")
        if self._index is not None:
            watched = [bool(self._index.candidates(e)) for e in events]
            unread = [e for e, w in zip(events, watched, strict=True) if not w]
            if unread:
                await self._store.insert([e.with_received(self._stamps.next()) for e in unread])
            events = [e for e, w in zip(events, watched, strict=True) if w]
        if events:
            await self._send(events)
        return ids

    async def _send(self, events: Sequence[Event]) -> None:
        if self._closed:  # the service is gone: nobody would answer
            raise ConnectionError("the service closed the delivery link")
        self._seq += 1
        seq = str(self._seq).encode()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = done
        # One event per line: their JSON never holds a raw newline.
        lines = b"".join(e.to_json() + b"\n" for e in events)
        self._writer.write(b"e " + seq + b" " + str(len(events)).encode() + b"\n" + lines)
        try:
            await done
        finally:
            self._waiting.pop(seq, None)

    async def run(self, wake: Callable[[], None]) -> None:
        """Until the service closes the socket."""
        try:
            while line := await self._reader.readline():
                kind, _, rest = line.rstrip(b"\n").partition(b" ")
                if kind == b"w":
                    wake()
                elif kind in (b"a", b"x"):
                    seq, _, reason = rest.partition(b" ")
                    done = self._waiting.get(seq)
                    if done is not None and not done.done():
                        if kind == b"a":
                            done.set_result(None)
                        else:
                            done.set_exception(RuntimeError(reason.decode(errors="replace")))
        except (ConnectionError, ValueError) as exc:
            log.error("delivery_link_failed", error=str(exc))
        self._closed = True
        for done in self._waiting.values():
            if not done.done():
                done.set_exception(ConnectionError("the service closed the delivery link"))


async def _run_worker(args: argparse.Namespace) -> int:
    from automations.delivery.channels import close_all
    from automations.service.settings import Settings
    from automations.service.wiring import build_dispatcher, freeze_startup_heap, load_or_exit
    from events.clock import SystemClock
    from events.database import create_engine, normalise_url
    from events.sqlite_checkpoint import no_autocheckpoint
    from notifiers import Redactor, configure_logging

    settings = Settings.from_env(config_paths=tuple(Path(p) for p in args.config) or None)
    config = load_or_exit(list(settings.config_paths), settings.env, exit_code=2)
    configure_logging(Redactor(config.secrets()), json=args.log_json)
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
        await asyncio.to_thread(fcntl.flock, lock_file.fileno(), fcntl.LOCK_EX)

    reader, writer = await asyncio.open_unix_connection(args.socket, limit=_LINE_LIMIT)
    db = create_engine(
        settings.database_url, **({"pool_size": 1, "max_overflow": 0} if single else {})
    )
    if single:
        no_autocheckpoint(db)  # the service checkpoints the WAL
    clock = SystemClock()
    state = StateStore(db)
    link = _Link(
        reader, writer, SqlEventStore(db), clock, config, state, embedded=settings.embedded
    )
    dispatcher, channels, controllers = build_dispatcher(settings, config, state, clock, link.emit)
    # Embedded: this is the only dispatcher on the database (the lock above), so what a
    # crash left 'sending' is owed now. Elsewhere other replicas' workers may be sending.
    await dispatcher.start(exclusive=settings.embedded)
    freeze_startup_heap()  # as the service does: no full collection walks it again
    linked = asyncio.create_task(link.run(dispatcher.wake))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({linked, stopped}, return_when=asyncio.FIRST_COMPLETED)
    await dispatcher.stop()
    for task in (linked, stopped):
        task.cancel()
    await asyncio.gather(linked, stopped, return_exceptions=True)
    await channels.aclose()
    await close_all(*controllers.values())
    writer.close()
    await db.dispose()
    if lock_file is not None:
        lock_file.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automations.service.worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--log-json", action="store_true")
    args = parser.parse_args(argv)
    import typer
    import uvloop  # installed with uvicorn[standard], as `serve` runs on it

    try:
        return uvloop.run(_run_worker(args))
    except typer.Exit as exc:  # a config problem, printed already
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
