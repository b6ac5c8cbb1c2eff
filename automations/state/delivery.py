"""The dispatcher's side of ``StateStore``: the outbox, claims, attempts, pauses, replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Result, Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import configure_mappers

from automations.state.handoff import NOTIFY_OUTBOX
from automations.state.model import (
    _OUTBOX_COLUMNS,
    FIRING_COLUMNS,
    OWED,
    AttemptRow,
    Firing,
    FiringRow,
    OutboxRow,
    Outcome,
    PausedRow,
    StoreBase,
    attempt_rows,
    driver_executemany,
    driver_insert,
    firing_of,
    insert_ignore,
    intent_values,
    newest,
    outbox_insert,
    outbox_rows,
)
from events.database import UtcDateTime, driver_bool, driver_json, driver_time
from events.model import json_loads
from events.sqlite import in_transaction, sqlite_time

_OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
_FIRINGS = FiringRow.__table__  # type: ignore[attr-defined]
_ATTEMPT_COLUMNS = (
    "outbox_id",
    "attempt",
    "at",
    "ok",
    "retryable",
    "status_code",
    "latency_ms",
    "target",
    "reason",
    "series",
)


def _outcome_sql(dialect: str) -> str:
    """The outbox row's new state after an attempt (``next_attempt_at`` kept when NULL)."""
    if dialect == "sqlite":
        return (
            "UPDATE action_outbox SET status = ?, next_attempt_at = "
            "coalesce(?, next_attempt_at), last_error = ? WHERE id = ?"
        )
    return (
        "UPDATE action_outbox SET status = $1, next_attempt_at = "
        "coalesce($2::timestamptz, next_attempt_at), last_error = $3 WHERE id = $4"
    )


def _due(now: datetime, limit: int, *columns: Any) -> Select[Any]:
    """Owed rows due by ``now``, the longest-waiting first."""
    return (
        select(*columns)
        .where(_OUTBOX.c.status.in_(OWED))
        .where(_OUTBOX.c.next_attempt_at <= now)
        .order_by(_OUTBOX.c.next_attempt_at)
        .limit(limit)
    )


class DeliveryState(StoreBase):
    paused_version = 0  # bumped by set_paused: in-process readers refresh at once

    async def due(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        """Outbox rows owed now: pending, or 'sending' left over by a crash (in doubt)."""
        async with self.engine.connect() as conn:
            return outbox_rows(await conn.execute(_due(now, limit, _OUTBOX)))

    async def next_due_at(self) -> datetime | None:
        if self.engine.dialect.name == "sqlite":  # one round trip to aiosqlite's thread

            def earliest(connection: sqlite3.Connection) -> str | None:
                found: str | None = connection.execute(_NEXT_DUE_SQLITE).fetchone()[0]
                return found

            text = await in_transaction(self.engine, earliest, write=False)
            return None if text is None else sqlite_time(text)
        stmt = select(func.min(_OUTBOX.c.next_attempt_at)).where(_OUTBOX.c.status.in_(OWED))
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return row[0] if row and row[0] else None

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[OutboxRow]:
        """:meth:`claim_due_with_firings` without the firings."""
        return (await self.claim_due_with_firings(now, lease_until, limit))[0]

    async def claim_due_with_firings(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        known: Mapping[str, Firing] | None = None,
    ) -> tuple[list[OutboxRow], dict[str, Firing]]:
        """Take up to ``limit`` due rows for one attempt each, atomically, and read their
        firings in the same transaction (one connection, one commit). Firings in
        ``known`` (as the engine committed them) are not read again.

        Due: pending, or 'sending' whose lease has ended (the attempt was lost with
        its process). Claimed rows are 'sending' with ``attempts`` incremented and
        ``next_attempt_at`` at the lease end; concurrent dispatchers skip them
        (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the single writer on SQLite).
        """
        if limit <= 0:
            return [], {}
        if self.engine.dialect.name == "sqlite":
            return await _claim_on_sqlite(self.engine, now, lease_until, limit, known or {})
        table = _OUTBOX
        due = _due(now, limit, table.c.id).with_for_update(skip_locked=True)
        async with self.engine.begin() as conn:
            claimed = _claimed_rows(
                await conn.execute(
                    update(table)
                    .where(table.c.id.in_(due.scalar_subquery()))
                    .values(
                        status="sending",
                        attempts=table.c.attempts + 1,
                        next_attempt_at=lease_until,
                    )
                    .returning(*table.c)
                )
            )
            firings = _known_firings(claimed, known or {})
            wanted = list({row.firing_id for row in claimed} - firings.keys())
            if wanted:
                found = await conn.execute(select(_FIRINGS).where(_FIRINGS.c.id.in_(wanted)))
                firings.update((r.id, firing_of(r._mapping)) for r in found)
            return claimed, firings

    async def release_in_flight(self, now: datetime) -> None:
        """Attempts left 'sending' by a crashed process are owed again now."""
        table = _OUTBOX
        async with self.engine.begin() as conn:
            await conn.execute(
                update(table)
                .where(table.c.status == "sending")
                .values(status="pending", next_attempt_at=now)
            )

    async def record_attempts(self, outcomes: Sequence[Outcome]) -> None:
        """Record a set of finished attempts and their rows' new status in one transaction."""
        if not outcomes:
            return
        if self.engine.dialect.name == "sqlite":

            def record(connection: sqlite3.Connection) -> None:
                for sql, rows in _record_statements(outcomes, "sqlite"):
                    connection.executemany(sql, rows)

            await in_transaction(self.engine, record)
            return
        async with self.engine.begin() as conn:
            for sql, rows in _record_statements(outcomes, conn.dialect.name):
                await driver_executemany(conn, sql, rows)

    async def outbox(self, status: str | None = None, limit: int = 100) -> list[OutboxRow]:
        stmt = newest(_OUTBOX, limit, _OUTBOX.c.created_at.desc(), status=status)
        async with self.engine.connect() as conn:
            return outbox_rows(await conn.execute(stmt))

    async def attempts(self, outbox_id: str | None = None, limit: int = 100) -> list[AttemptRow]:
        table = AttemptRow.__table__  # type: ignore[attr-defined]
        stmt = newest(table, limit, table.c.id.desc(), outbox_id=outbox_id)
        async with self.engine.connect() as conn:
            return attempt_rows(await conn.execute(stmt))

    # -- dispatcher additions: rate limits, pauses, resolves, the deliveries API --
    async def defer(self, rows: Sequence[tuple[str, datetime]]) -> None:
        """Hand claimed rows back unsent, due at the given times; the claim is not an attempt."""
        if not rows:
            return
        table = _OUTBOX
        async with self.engine.begin() as conn:
            await conn.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .where(table.c.status == "sending")
                .values(
                    status="pending",
                    attempts=table.c.attempts - 1,
                    next_attempt_at=bindparam("b_at", type_=UtcDateTime()),
                ),
                [{"b_id": outbox_id, "b_at": at} for outbox_id, at in rows],
            )

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause (or resume) an automation by name; idempotent."""
        table = PausedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            if paused:
                stmt = insert_ignore(conn, table)
                await conn.execute(stmt.on_conflict_do_nothing(), [{"name": name}])
            else:
                await conn.execute(table.delete().where(table.c.name == name))
        # Readers in this process (the engine) see the change at once; other
        # processes re-read the table periodically.
        self.paused_version += 1

    async def paused(self) -> set[str]:
        """Names of the automations a ``pause-automation`` action paused."""
        table = PausedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            return {r[0] for r in await conn.execute(select(table.c.name))}

    async def delivered_ref(self, firing_id_: str, channel: str) -> dict[str, str] | None:
        """The ``ref`` a firing's notify to ``channel`` stored when it was sent."""
        table = _OUTBOX
        stmt = (
            select(table.c.ref)
            .where(table.c.firing_id == firing_id_)
            .where(table.c.action["channel"].as_string() == channel)
            .where(table.c.status == "sent")
        )
        async with self.engine.connect() as conn:
            for row in await conn.execute(stmt):
                if row[0]:
                    return dict(row[0])
        return None

    async def deliveries(
        self,
        *,
        status: str | None = None,
        automation: str | None = None,
        firing_id: str | None = None,
        channel: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[tuple[OutboxRow, list[AttemptRow]]]:
        """Outbox rows (newest first) matching every given filter, each with its attempts."""
        table = _OUTBOX
        attempts = AttemptRow.__table__  # type: ignore[attr-defined]
        stmt = newest(
            table,
            limit,
            table.c.created_at.desc(),
            table.c.id,
            status=status,
            automation=automation,
            firing_id=firing_id,
        )
        if channel:
            stmt = stmt.where(table.c.action["channel"].as_string() == channel)
        if since is not None:
            stmt = stmt.where(table.c.created_at >= since)
        async with self.engine.connect() as conn:
            rows = outbox_rows(await conn.execute(stmt))
            by_row: dict[str, list[AttemptRow]] = {row.id: [] for row in rows}
            if rows:
                found = await conn.execute(
                    select(attempts)
                    .where(attempts.c.outbox_id.in_(list(by_row)))
                    .order_by(attempts.c.id)
                )
                for attempt in attempt_rows(found):
                    by_row[attempt.outbox_id].append(attempt)
        return [(row, by_row[row.id]) for row in rows]

    async def replay(self, outbox_id: str, now: datetime) -> str:
        """Owe a finished (sent or dead) delivery again as a new attempt series.

        Returns ``replayed``, ``missing`` or ``busy`` (still pending or sending).
        The row keeps its id, so the idempotency key the target sees is the same:
        see automations/CONTRACTS.md (Dispatcher) for why.
        """
        table = _OUTBOX
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(table)
                .where(table.c.id == outbox_id)
                .where(table.c.status.in_(("sent", "dead")))
                .values(
                    status="pending",
                    attempts=0,
                    series=table.c.series + 1,
                    created_at=now,
                    next_attempt_at=now,
                    last_error=None,
                )
            )
            if done.rowcount:
                if conn.dialect.name == "postgresql":
                    await conn.exec_driver_sql(NOTIFY_OUTBOX)  # delivery workers LISTEN
                return "replayed"
            exists = (await conn.execute(select(table.c.id).where(table.c.id == outbox_id))).first()
        return "busy" if exists else "missing"


def _attempt_values(attempt: AttemptRow, dialect: str) -> tuple[Any, ...]:
    """``attempt`` as the ``delivery_attempts`` columns bind it (``id`` is assigned)."""
    return (
        attempt.outbox_id,
        attempt.attempt,
        driver_time(attempt.at, dialect),
        driver_bool(attempt.ok, dialect),
        driver_bool(attempt.retryable, dialect),
        attempt.status_code,
        attempt.latency_ms,
        attempt.target,
        attempt.reason,
        attempt.series,
    )


def _claimed_rows(result: Result[Any]) -> list[OutboxRow]:
    """The claim's rows, built without re-validating what the column types already
    decoded (``model_construct``: about a tenth of ``model_validate``'s cost)."""
    configure_mappers()  # model_construct skips the step that would do it; a no-op after
    return [OutboxRow.model_construct(**r._mapping) for r in result]


# -- the claim on SQLite, sent to the driver: two statements, one aiosqlite hop each ------
# A new row's columns (the engine inserts them), then what a send stores on it
_CLAIMED_COLUMNS = (*_OUTBOX_COLUMNS, "ref")
_CLAIM_SQLITE = (
    "UPDATE action_outbox SET status = 'sending', attempts = attempts + 1, "  # noqa: S608
    "next_attempt_at = ? WHERE id IN (SELECT id FROM action_outbox "
    f"WHERE status IN ({', '.join(repr(s) for s in OWED)}) AND next_attempt_at <= ? "
    f"ORDER BY next_attempt_at LIMIT ?) RETURNING {', '.join(_CLAIMED_COLUMNS)}"
)


def _known_firings(claimed: Sequence[OutboxRow], known: Mapping[str, Firing]) -> dict[str, Firing]:
    """The claimed rows' firings found in ``known``."""
    return {row.firing_id: f for row in claimed if (f := known.get(row.firing_id)) is not None}


async def _claim_on_sqlite(
    db: AsyncEngine,
    now: datetime,
    lease_until: datetime,
    limit: int,
    known: Mapping[str, Firing],
) -> tuple[list[OutboxRow], dict[str, Firing]]:
    """:meth:`DeliveryState.claim_due_with_firings` on SQLite in one round trip to
    aiosqlite's thread, decoding the columns as their types do (``UtcDateTime``:
    SQLite's text, UTC; ``JSON``: orjson)."""
    params = (driver_time(lease_until, "sqlite"), driver_time(now, "sqlite"), limit)

    def claim(connection: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
        rows = connection.execute(_CLAIM_SQLITE, params).fetchall()
        wanted = list({r[1] for r in rows if r[1] not in known})
        if not wanted:
            return rows, []
        sql = (
            f"SELECT {', '.join(FIRING_COLUMNS)} FROM firings "  # noqa: S608 (constants only)
            f"WHERE id IN ({', '.join('?' * len(wanted))})"
        )
        return rows, connection.execute(sql, wanted).fetchall()

    rows, firing_rows = await in_transaction(db, claim)
    configure_mappers()  # model_construct skips the step that would do it; a no-op after
    claimed = [
        OutboxRow.model_construct(
            id=r[0],
            firing_id=r[1],
            automation=r[2],
            action_index=r[3],
            action=json_loads(r[4]),
            status=r[5],
            attempts=r[6],
            created_at=sqlite_time(r[7]),
            next_attempt_at=sqlite_time(r[8]),
            last_error=r[9],
            series=r[10],
            ref=None if r[11] is None else orjson.loads(r[11]),
        )
        for r in rows
    ]
    firings = _known_firings(claimed, known)
    firings |= {
        r[0]: firing_of(
            {
                "id": r[0],
                "automation": r[1],
                "state": r[2],
                "at": sqlite_time(r[3]),
                "bucket": orjson.loads(r[4]),
                "event_ids": orjson.loads(r[5]),
                "silenced": bool(r[6]),
                "context": json_loads(r[7]),
            }
        )
        for r in firing_rows
    }
    return claimed, firings


_NEXT_DUE_SQLITE = (
    "SELECT min(next_attempt_at) FROM action_outbox "  # noqa: S608 (constants only)
    f"WHERE status IN ({', '.join(repr(s) for s in OWED)})"
)


def _record_statements(
    outcomes: Sequence[Outcome], dialect: str
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """:meth:`DeliveryState.record_attempts`' statements, each with its pre-encoded rows
    (one executemany each, no per-row SQLAlchemy bind processing)."""
    statements = [
        (
            driver_insert(dialect, "delivery_attempts", _ATTEMPT_COLUMNS),
            [_attempt_values(o.attempt, dialect) for o in outcomes],
        ),
        (
            _outcome_sql(dialect),
            [
                (
                    o.status,
                    None if o.next_attempt_at is None else driver_time(o.next_attempt_at, dialect),
                    o.error,
                    o.attempt.outbox_id,
                )
                for o in outcomes
            ],
        ),
    ]
    refs = [(driver_json(dict(o.ref)), o.attempt.outbox_id) for o in outcomes if o.ref]
    if refs:
        statements.append((_REF_SQL[dialect], refs))
    spawned = [
        intent_values(i, driver_time(o.attempt.at, dialect), dialect)
        for o in outcomes
        for i in o.spawn
    ]
    if spawned:
        statements.append((outbox_insert(dialect), spawned))
    return statements


_REF_SQL = {
    "sqlite": "UPDATE action_outbox SET ref = ? WHERE id = ?",
    "postgresql": "UPDATE action_outbox SET ref = $1 WHERE id = $2",
}
