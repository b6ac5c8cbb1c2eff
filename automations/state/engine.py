"""The engine's side of ``StateStore``: processed ids, firings, checkpoints, the batch commit."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from datetime import datetime
from typing import Any, Self
from uuid import NAMESPACE_URL, UUID, uuid5

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from automations.state.handoff import NOTIFY_OUTBOX
from automations.state.model import (
    CheckpointRow,
    EngineScopeRow,
    Firing,
    FiringRow,
    Intent,
    ProcessedRow,
    StoreBase,
    driver_executemany,
    driver_fetchall,
    driver_insert,
    firing_of,
    firing_values,
    firings_insert,
    insert_ignore,
    intent_values,
    newest,
    outbox_insert,
)
from events.database import driver_time
from events.sqlite import in_transaction


class AlreadyProcessed(Exception):
    """Some ids of an optimistic batch were processed before: nothing was written."""

    def __init__(self, fresh: set[str]) -> None:
        super().__init__(f"{len(fresh)} fresh ids")
        self.fresh = fresh


class Fenced(Exception):
    """A newer owner claimed this engine scope: this process must drop its copy of it."""


_SCOPE_NS = uuid5(NAMESPACE_URL, "https://runbell.dev/engine-scope")
_CHUNK = 500  # rows per multi-row INSERT ... RETURNING (2 parameters each)
_IGNORE = "ON CONFLICT DO NOTHING"
_FRESH = "ON CONFLICT DO NOTHING RETURNING event_id"
_CHECKPOINT = "ON CONFLICT (name) DO UPDATE SET received = excluded.received"
_FENCE = {  # still the owner? (on PostgreSQL the row stays locked until commit)
    "sqlite": "UPDATE engine_scopes SET epoch = ? WHERE scope = ? AND epoch = ?",
    "postgresql": "UPDATE engine_scopes SET epoch = $1 WHERE scope = $2 AND epoch = $3",
}


def _run_on_sqlite(
    connection: sqlite3.Connection, steps: Generator[tuple[str, str, Any], Any, None]
) -> None:
    """Run :meth:`EngineState._statements` on a ``sqlite3`` connection (aiosqlite's thread)."""
    result: Any = None
    while True:
        try:
            kind, sql, params = steps.send(result)
        except StopIteration:
            return
        if kind == "fence":
            result = connection.execute(sql, params).rowcount
        elif kind == "fetch":
            result = connection.execute(sql, params).fetchall()
        else:
            connection.executemany(sql, params)
            result = None


class EngineState(StoreBase):
    scope = ""  # "" = the one engine of an embedded service; else one shard's name
    processed_scope = ""  # whose processed ids these are (shared by all routers)
    epoch: int | None = None  # set by claim(): commits are fenced on it

    def scoped(self, scope: str, processed: str | None = None) -> Self:
        """The same database seen by one engine partition: its fence, held events and
        clock; its processed ids too unless ``processed`` names a shared namespace."""
        other = copy.copy(self)
        other.scope, other.epoch = scope, None
        other.processed_scope = scope if processed is None else processed
        return other

    def processed_key(self, event_id: UUID | str) -> str:
        """The processed-id row of an event in this scope (36 characters either way)."""
        if not self.processed_scope:
            return str(event_id)
        return str(uuid5(_SCOPE_NS, f"{self.processed_scope}/{event_id}"))

    async def claim(self) -> int:
        """Become this scope's owner: bump its epoch; older owners' commits now fail."""
        table = EngineScopeRow.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            stmt = insert_ignore(conn, table)
            row = (
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["scope"], set_={"epoch": table.c.epoch + 1}
                    ).returning(table.c.epoch),
                    [{"scope": self.scope, "epoch": 1}],
                )
            ).first()
        assert row is not None
        self.epoch = int(row[0])
        return self.epoch

    async def unprocessed(self, event_ids: Sequence[UUID]) -> set[UUID]:
        if not event_ids:
            return set()
        keys = {self.processed_key(i): i for i in event_ids}
        table = ProcessedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(table.c.event_id).where(table.c.event_id.in_(list(keys)))
            )
            seen = {keys[r[0]] for r in rows}
        return {i for i in event_ids if i not in seen}

    async def commit_batch(
        self,
        *,
        processed: Iterable[UUID | str],
        firings: Sequence[Firing],
        intents: Sequence[Intent],
        now: datetime,
        checkpoint: tuple[str, datetime] | None,
        extra: Callable[[AsyncConnection], Awaitable[None]] | None = None,
        require_fresh: bool = False,
    ) -> None:
        """Write a batch's outcome atomically; duplicates of earlier writes are ignored.

        ``extra`` runs inside the same transaction (the engine's trigger state). On
        SQLite, when ``extra`` also has a ``sqlite(connection)`` method (or there is no
        ``extra``), the whole transaction runs in one hand-off to aiosqlite's thread on
        the ``sqlite3`` connection, ``extra.sqlite`` included.
        ``require_fresh``: the caller evaluated ``processed`` without asking first
        (one round trip less); if any id was processed before, the transaction is
        rolled back and :class:`AlreadyProcessed` names the ids that were fresh.
        """
        keys = {self.processed_key(i): str(i) for i in processed}
        direct = getattr(extra, "sqlite", None) if extra is not None else None
        if self.engine.dialect.name == "sqlite" and (extra is None or direct is not None):
            # The whole transaction in one hand-off to aiosqlite's thread.
            def work(connection: sqlite3.Connection) -> None:
                _run_on_sqlite(
                    connection,
                    self._statements(
                        "sqlite", keys, firings, intents, now, checkpoint, require_fresh
                    ),
                )
                if direct is not None:
                    direct(connection)

            await in_transaction(self.engine, work)
            return
        async with self.engine.begin() as conn:
            steps = self._statements(
                conn.dialect.name, keys, firings, intents, now, checkpoint, require_fresh
            )
            result: Any = None
            while True:
                try:
                    kind, sql, params = steps.send(result)
                except StopIteration:
                    break
                if kind == "fence":
                    result = (await conn.exec_driver_sql(sql, params)).rowcount
                elif kind == "fetch":
                    result = await driver_fetchall(conn, sql, params)
                else:
                    await driver_executemany(conn, sql, params)
                    result = None
            if extra is not None:
                await extra(conn)
            if intents and conn.dialect.name == "postgresql":
                # Delivery workers LISTEN: told when this commit is visible, not before.
                await conn.exec_driver_sql(NOTIFY_OUTBOX)

    def _statements(
        self,
        dialect: str,
        keys: dict[str, str],
        firings: Sequence[Firing],
        intents: Sequence[Intent],
        now: datetime,
        checkpoint: tuple[str, datetime] | None,
        require_fresh: bool,
    ) -> Generator[tuple[str, str, Any], Any, None]:
        """A batch's statements, in order, as (kind, SQL, parameters) for a runner:
        ``fence`` (sent back: rows updated), ``fetch`` (sent back: the rows), ``many``."""
        at = driver_time(now, dialect)
        if self.epoch is not None:
            updated = yield ("fence", _FENCE[dialect], (self.epoch, self.scope, self.epoch))
            if updated != 1:
                raise Fenced(f"engine scope {self.scope!r} was claimed by a newer owner")
        if keys and require_fresh:
            fresh: set[str] = set()
            chunks = list(keys)
            for start in range(0, len(chunks), _CHUNK):
                chunk = chunks[start : start + _CHUNK]
                sql = driver_insert(
                    dialect, "processed_events", ("event_id", "at"), len(chunk), _FRESH
                )
                rows = yield ("fetch", sql, tuple(v for key in chunk for v in (key, at)))
                fresh.update(keys[row[0]] for row in rows)
            if len(fresh) != len(keys):
                raise AlreadyProcessed(fresh)
        elif keys:
            sql = driver_insert(dialect, "processed_events", ("event_id", "at"), 1, _IGNORE)
            yield ("many", sql, [(key, at) for key in keys])
        if firings:
            yield ("many", firings_insert(dialect), [firing_values(f, dialect) for f in firings])
        if intents:
            rows = [intent_values(i, at, dialect) for i in intents]
            yield ("many", outbox_insert(dialect), rows)
        if checkpoint is not None:
            name, received = checkpoint
            sql = driver_insert(dialect, "engine_checkpoints", ("name", "received"), 1, _CHECKPOINT)
            yield ("many", sql, [(name, driver_time(received, dialect))])

    async def checkpoint(self, name: str) -> datetime | None:
        table = CheckpointRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(table.c.received).where(table.c.name == name))).first()
        return row[0] if row else None

    async def prune_processed(self, older_than: datetime) -> None:
        table = ProcessedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            await conn.execute(table.delete().where(table.c.at < older_than))

    async def firings_by_id(self, ids: Iterable[str]) -> dict[str, Firing]:
        table = FiringRow.__table__  # type: ignore[attr-defined]
        wanted = list(set(ids))
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(table).where(table.c.id.in_(wanted)))
            return {r.id: firing_of(r._mapping) for r in rows}

    async def firing(self, firing_id_: str) -> Firing | None:
        table = FiringRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(table).where(table.c.id == firing_id_))).first()
        return firing_of(row._mapping) if row else None

    async def firings(self, automation: str | None = None, limit: int = 100) -> list[Firing]:
        table = FiringRow.__table__  # type: ignore[attr-defined]
        stmt = newest(table, limit, table.c.at.desc(), automation=automation)
        async with self.engine.connect() as conn:
            return [firing_of(r._mapping) for r in await conn.execute(stmt)]

    async def triggered_before(self, resolved: Firing) -> Firing | None:
        """The latest 'triggered' firing of the same automation and bucket as ``resolved``."""
        table = FiringRow.__table__  # type: ignore[attr-defined]
        stmt = (
            select(table)
            .where(table.c.automation == resolved.automation)
            .where(table.c.state == "triggered")
            .where(table.c.at <= resolved.at)
            .order_by(table.c.at.desc())
            .limit(200)
        )
        async with self.engine.connect() as conn:
            for row in await conn.execute(stmt):
                if row._mapping["bucket"] == resolved.bucket:
                    return firing_of(row._mapping)
        return None
