"""Durable engine state: firings, the action outbox, delivery attempts, processed ids.

Invariants (see automations/CONTRACTS.md):

* A firing's id is deterministic (:func:`firing_id`), and the firing, its action
  intents, the processed event ids and the checkpoint are written in ONE
  transaction (:meth:`StateStore.commit_batch`). The bus offset is committed
  only after that transaction, so a crash at any instant either loses nothing
  (the batch is redelivered) or doubles nothing (ids already present are ignored).
* An outbox row's id is ``<firing id>:<action index>`` and doubles as the
  idempotency key handed to the target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Integer,
    String,
    Text,
    bindparam,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateColumn
from sqlmodel import Field, SQLModel

from automations.grouping import GroupingState
from events.database import UtcDateTime

_NS = uuid5(NAMESPACE_URL, "https://runbell.dev/firing")


def firing_id(automation: str, trigger: int, bucket: str, event_id: UUID | str, state: str) -> str:
    """Same automation, trigger, bucket, triggering event and state → same id, always."""
    return str(uuid5(_NS, f"{automation}\x1f{trigger}\x1f{bucket}\x1f{event_id}\x1f{state}"))


class FiringRow(SQLModel, table=True):
    __tablename__ = "firings"

    id: str = Field(primary_key=True, max_length=64)
    automation: str = Field(index=True, max_length=512)
    state: str = Field(max_length=16)  # triggered | resolved
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    bucket: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    event_ids: list[str] = Field(sa_column=Column(JSON, nullable=False))
    silenced: bool = False
    context: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class OutboxRow(SQLModel, table=True):
    __tablename__ = "action_outbox"

    id: str = Field(primary_key=True, max_length=80)  # "<firing id>:<action index>"
    firing_id: str = Field(index=True, max_length=64)
    automation: str = Field(max_length=512)
    action_index: int
    action: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(index=True, max_length=16)  # pending | sending | sent | dead
    attempts: int = 0
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    last_error: str | None = Field(default=None, sa_column=Column(String(2000), nullable=True))
    # What a successful send created (Slack: {"channel", "ts"}), for a later resolve.
    ref: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Bumped by each replay: attempts of one series share it (see StateStore.replay).
    series: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class AttemptRow(SQLModel, table=True):
    __tablename__ = "delivery_attempts"

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(sqlite.INTEGER(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    outbox_id: str = Field(index=True, max_length=80)
    attempt: int
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    ok: bool
    retryable: bool
    status_code: int | None = None
    latency_ms: float
    target: str = Field(max_length=2000)
    reason: str = Field(max_length=2000)
    series: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class PausedRow(SQLModel, table=True):
    """An automation paused by a ``pause-automation`` action (the engine skips it)."""

    __tablename__ = "automation_paused"

    name: str = Field(primary_key=True, max_length=512)


class ProcessedRow(SQLModel, table=True):
    __tablename__ = "processed_events"

    event_id: str = Field(primary_key=True, max_length=36)
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "engine_checkpoints"

    name: str = Field(primary_key=True, max_length=200)
    received: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class GroupRow(SQLModel, table=True):
    """One open notification group (``automations/grouping.py``), persisted between flushes."""

    __tablename__ = "notify_groups"

    id: str = Field(primary_key=True, max_length=64)  # sha256 of the group key
    automation: str = Field(index=True, max_length=512)
    action_index: int
    next_flush: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    # GroupingState JSON holding this one group (its key included).
    state: str = Field(sa_column=Column(Text, nullable=False))


@dataclass(frozen=True, slots=True)
class Firing:
    id: str
    automation: str
    state: str
    at: datetime
    bucket: dict[str, str]
    event_ids: list[str]
    context: dict[str, Any]  # what templates see: the triggering events, JSON-shaped
    silenced: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished delivery attempt and what it means for its outbox row."""

    attempt: AttemptRow
    status: str  # sent | pending (retry later) | dead
    next_attempt_at: datetime | None
    error: str | None
    ref: dict[str, str] | None = None  # stored on the outbox row when given
    spawn: tuple[Intent, ...] = ()  # follow-up intents (a fallback), inserted with the outcome


@dataclass(frozen=True, slots=True)
class Intent:
    """One action owed for one firing."""

    firing_id: str
    automation: str
    action_index: int
    action: dict[str, Any]
    suffix: str = ""  # ":fallback" for the intent a dead notify hands to its fallback channel

    @property
    def id(self) -> str:
        return f"{self.firing_id}:{self.action_index}{self.suffix}"


@dataclass(frozen=True, slots=True)
class OwedDigest:
    """A group's digest owed as an outbox row whose id is the digest's idempotency key."""

    id: str
    automation: str
    action_index: int
    action: dict[str, Any]
    at: datetime  # created and due


@dataclass(frozen=True, slots=True)
class GroupingChange:
    """What one grouping step writes, atomically (:meth:`StateStore.change_grouping`).

    ``state``: the new state of the groups the step was given (absent = removed);
    ``grouped``: attempts of intents taken into a group (their rows become
    ``grouped``, a terminal status); ``firings`` + ``digests``: digests owed (the
    digest firing shares the digest's id).
    """

    state: GroupingState
    grouped: Sequence[Outcome] = ()
    firings: Sequence[Firing] = ()
    digests: Sequence[OwedDigest] = ()


def _insert_ignore(conn: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class StateStore:
    """Engine and dispatcher state on the same database as the event store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
            await conn.run_sync(_add_missing_columns)

    # -- engine side -------------------------------------------------------
    async def unprocessed(self, event_ids: Sequence[UUID]) -> set[UUID]:
        if not event_ids:
            return set()
        wanted = [str(i) for i in event_ids]
        table = ProcessedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(table.c.event_id).where(table.c.event_id.in_(wanted)))
            seen = {r[0] for r in rows}
        return {i for i in event_ids if str(i) not in seen}

    async def commit_batch(
        self,
        *,
        processed: Iterable[UUID],
        firings: Sequence[Firing],
        intents: Sequence[Intent],
        now: datetime,
        checkpoint: tuple[str, datetime] | None,
        extra: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> None:
        """Write a batch's outcome atomically; duplicates of earlier writes are ignored.

        ``extra`` runs inside the same transaction (the engine's trigger state).
        """
        processed_rows = [{"event_id": str(i), "at": now} for i in processed]
        async with self.engine.begin() as conn:
            if processed_rows:
                stmt = _insert_ignore(conn, ProcessedRow.__table__)  # type: ignore[attr-defined]
                await conn.execute(stmt.on_conflict_do_nothing(), processed_rows)
            if firings:
                stmt = _insert_ignore(conn, FiringRow.__table__)  # type: ignore[attr-defined]
                await conn.execute(
                    stmt.on_conflict_do_nothing(),
                    [
                        {
                            "id": f.id,
                            "automation": f.automation,
                            "state": f.state,
                            "at": f.at,
                            "bucket": f.bucket,
                            "event_ids": f.event_ids,
                            "silenced": f.silenced,
                            "context": f.context,
                        }
                        for f in firings
                    ],
                )
            if intents:
                stmt = _insert_ignore(conn, OutboxRow.__table__)  # type: ignore[attr-defined]
                await conn.execute(
                    stmt.on_conflict_do_nothing(),
                    [
                        {
                            "id": i.id,
                            "firing_id": i.firing_id,
                            "automation": i.automation,
                            "action_index": i.action_index,
                            "action": i.action,
                            "status": "pending",
                            "attempts": 0,
                            "created_at": now,
                            "next_attempt_at": now,
                            "last_error": None,
                        }
                        for i in intents
                    ],
                )
            if checkpoint is not None:
                name, received = checkpoint
                stmt = _insert_ignore(conn, CheckpointRow.__table__)  # type: ignore[attr-defined]
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["name"], set_={"received": received}
                    ),
                    [{"name": name, "received": received}],
                )
            if extra is not None:
                await extra(conn)

    async def checkpoint(self, name: str) -> datetime | None:
        table = CheckpointRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(table.c.received).where(table.c.name == name))).first()
        return row[0] if row else None

    async def prune_processed(self, older_than: datetime) -> None:
        table = ProcessedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            await conn.execute(table.delete().where(table.c.at < older_than))

    # -- dispatcher side ---------------------------------------------------
    async def due(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        """Outbox rows owed now: pending, or 'sending' left over by a crash (in doubt)."""
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(table)
                .where(table.c.status.in_(("pending", "sending")))
                .where(table.c.next_attempt_at <= now)
                .order_by(table.c.next_attempt_at)
                .limit(limit)
            )
            return [OutboxRow.model_validate(dict(r._mapping)) for r in rows]

    async def next_due_at(self) -> datetime | None:
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.min(table.c.next_attempt_at)).where(
                        table.c.status.in_(("pending", "sending"))
                    )
                )
            ).first()
        return row[0] if row and row[0] else None

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[OutboxRow]:
        """Take up to ``limit`` due rows for one attempt each, atomically.

        Due: pending, or 'sending' whose lease has ended (the attempt was lost with
        its process). Claimed rows are 'sending' with ``attempts`` incremented and
        ``next_attempt_at`` at the lease end; concurrent dispatchers skip them
        (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the single writer on SQLite).
        """
        if limit <= 0:
            return []
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        due = (
            select(table.c.id)
            .where(table.c.status.in_(("pending", "sending")))
            .where(table.c.next_attempt_at <= now)
            .order_by(table.c.next_attempt_at)
            .limit(limit)
        )
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            rows = await conn.execute(
                update(table)
                .where(table.c.id.in_(due.scalar_subquery()))
                .values(
                    status="sending", attempts=table.c.attempts + 1, next_attempt_at=lease_until
                )
                .returning(*table.c)
            )
            return [OutboxRow.model_validate(dict(r._mapping)) for r in rows]

    async def firings_by_id(self, ids: Iterable[str]) -> dict[str, Firing]:
        table = FiringRow.__table__  # type: ignore[attr-defined]
        wanted = list(set(ids))
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(table).where(table.c.id.in_(wanted)))
            return {r.id: _firing(r._mapping) for r in rows}

    async def release_in_flight(self, now: datetime) -> None:
        """Attempts left 'sending' by a crashed process are owed again now."""
        table = OutboxRow.__table__  # type: ignore[attr-defined]
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
        outbox = OutboxRow.__table__  # type: ignore[attr-defined]
        attempts = AttemptRow.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            await conn.execute(
                attempts.insert(), [o.attempt.model_dump(exclude={"id"}) for o in outcomes]
            )
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == bindparam("b_id"))
                .values(
                    status=bindparam("b_status"),
                    next_attempt_at=func.coalesce(
                        bindparam("b_next", type_=UtcDateTime()), outbox.c.next_attempt_at
                    ),
                    last_error=bindparam("b_error"),
                ),
                [
                    {
                        "b_id": o.attempt.outbox_id,
                        "b_status": o.status,
                        "b_next": o.next_attempt_at,
                        "b_error": o.error,
                    }
                    for o in outcomes
                ],
            )
            refs = [{"b_id": o.attempt.outbox_id, "b_ref": dict(o.ref)} for o in outcomes if o.ref]
            if refs:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id == bindparam("b_id"))
                    .values(ref=bindparam("b_ref", type_=JSON)),
                    refs,
                )
            spawned = [_outbox_row(i, o.attempt.at) for o in outcomes for i in o.spawn]
            if spawned:
                stmt = _insert_ignore(conn, outbox)
                await conn.execute(stmt.on_conflict_do_nothing(), spawned)

    async def firing(self, firing_id_: str) -> Firing | None:
        table = FiringRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(table).where(table.c.id == firing_id_))).first()
        return _firing(row._mapping) if row else None

    async def firings(self, automation: str | None = None, limit: int = 100) -> list[Firing]:
        table = FiringRow.__table__  # type: ignore[attr-defined]
        stmt = select(table).order_by(table.c.at.desc()).limit(min(limit, 1000))
        if automation:
            stmt = stmt.where(table.c.automation == automation)
        async with self.engine.connect() as conn:
            return [_firing(r._mapping) for r in await conn.execute(stmt)]

    async def outbox(self, status: str | None = None, limit: int = 100) -> list[OutboxRow]:
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        stmt = select(table).order_by(table.c.created_at.desc()).limit(min(limit, 1000))
        if status:
            stmt = stmt.where(table.c.status == status)
        async with self.engine.connect() as conn:
            return [OutboxRow.model_validate(dict(r._mapping)) for r in await conn.execute(stmt)]

    async def attempts(self, outbox_id: str | None = None, limit: int = 100) -> list[AttemptRow]:
        table = AttemptRow.__table__  # type: ignore[attr-defined]
        stmt = select(table).order_by(table.c.id.desc()).limit(min(limit, 1000))
        if outbox_id:
            stmt = stmt.where(table.c.outbox_id == outbox_id)
        async with self.engine.connect() as conn:
            return [AttemptRow.model_validate(dict(r._mapping)) for r in await conn.execute(stmt)]

    # -- dispatcher additions: rate limits, pauses, resolves, the deliveries API --
    async def defer(self, rows: Sequence[tuple[str, datetime]]) -> None:
        """Hand claimed rows back unsent, due at the given times; the claim is not an attempt."""
        if not rows:
            return
        table = OutboxRow.__table__  # type: ignore[attr-defined]
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
                stmt = _insert_ignore(conn, table)
                await conn.execute(stmt.on_conflict_do_nothing(), [{"name": name}])
            else:
                await conn.execute(table.delete().where(table.c.name == name))

    async def paused(self) -> set[str]:
        """Names of the automations a ``pause-automation`` action paused."""
        table = PausedRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            return {r[0] for r in await conn.execute(select(table.c.name))}

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
                    return _firing(row._mapping)
        return None

    async def delivered_ref(self, firing_id_: str, channel: str) -> dict[str, str] | None:
        """The ``ref`` a firing's notify to ``channel`` stored when it was sent."""
        table = OutboxRow.__table__  # type: ignore[attr-defined]
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
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        attempts = AttemptRow.__table__  # type: ignore[attr-defined]
        stmt = select(table).order_by(table.c.created_at.desc(), table.c.id).limit(min(limit, 1000))
        if status:
            stmt = stmt.where(table.c.status == status)
        if automation:
            stmt = stmt.where(table.c.automation == automation)
        if firing_id:
            stmt = stmt.where(table.c.firing_id == firing_id)
        if channel:
            stmt = stmt.where(table.c.action["channel"].as_string() == channel)
        if since is not None:
            stmt = stmt.where(table.c.created_at >= since)
        async with self.engine.connect() as conn:
            rows = [OutboxRow.model_validate(dict(r._mapping)) for r in await conn.execute(stmt)]
            by_row: dict[str, list[AttemptRow]] = {row.id: [] for row in rows}
            if rows:
                found = await conn.execute(
                    select(attempts)
                    .where(attempts.c.outbox_id.in_(list(by_row)))
                    .order_by(attempts.c.id)
                )
                for r in found:
                    attempt = AttemptRow.model_validate(dict(r._mapping))
                    by_row[attempt.outbox_id].append(attempt)
        return [(row, by_row[row.id]) for row in rows]

    async def replay(self, outbox_id: str, now: datetime) -> str:
        """Owe a finished (sent or dead) delivery again as a new attempt series.

        Returns ``replayed``, ``missing`` or ``busy`` (still pending or sending).
        The row keeps its id, so the idempotency key the target sees is the same:
        see automations/CONTRACTS.md (Dispatcher) for why.
        """
        table = OutboxRow.__table__  # type: ignore[attr-defined]
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
                return "replayed"
            exists = (await conn.execute(select(table.c.id).where(table.c.id == outbox_id))).first()
        return "busy" if exists else "missing"

    # -- notification grouping (automations/grouping_stage.py) -------------------
    async def next_group_flush(self) -> datetime | None:
        """The earliest moment an open notification group is owed a flush."""
        table = GroupRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(func.min(table.c.next_flush)))).first()
        return row[0] if row and row[0] else None

    async def change_grouping(
        self,
        change: Callable[[GroupingState], GroupingChange],
        *,
        automations: Collection[str] = (),
        due_by: datetime | None = None,
    ) -> GroupingChange:
        """Load the groups of ``automations`` and those due by ``due_by``, apply the pure
        ``change`` and write its outcome in ONE transaction; returns the change.

        Writers are serialised: an advisory transaction lock on PostgreSQL, the
        single writer on SQLite (plus the caller's own lock in-process).
        """
        table = GroupRow.__table__  # type: ignore[attr-defined]
        conditions = []
        if automations:
            conditions.append(table.c.automation.in_(list(automations)))
        if due_by is not None:
            conditions.append(table.c.next_flush <= due_by)
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('runbell.groups'))"))
            before: dict[str, Any] = {}
            if conditions:
                for row in await conn.execute(select(table.c.state).where(or_(*conditions))):
                    before.update(GroupingState.from_json(row[0]).groups)
            done = change(GroupingState(before))
            after = done.state.groups
            gone = [_group_row_id(key) for key in before if key not in after]
            if gone:
                await conn.execute(table.delete().where(table.c.id.in_(gone)))
            changed = [
                {
                    "id": _group_row_id(key),
                    "automation": group.automation,
                    "action_index": group.action,
                    "next_flush": group.next_flush,
                    "state": GroupingState({key: group}).to_json().decode(),
                }
                for key, group in after.items()
                if before.get(key) != group
            ]
            if changed:
                stmt = _insert_ignore(conn, table)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["id"],
                        set_={c: stmt.excluded[c] for c in ("next_flush", "state")},
                    ),
                    changed,
                )
            await _write_grouping_outcomes(conn, done)
        return done


def _group_row_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def _write_grouping_outcomes(conn: AsyncConnection, done: GroupingChange) -> None:
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    if done.grouped:
        attempts = AttemptRow.__table__  # type: ignore[attr-defined]
        await conn.execute(
            attempts.insert(), [o.attempt.model_dump(exclude={"id"}) for o in done.grouped]
        )
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"))
            .where(outbox.c.status == "sending")
            .values(status=bindparam("b_status"), last_error=None),
            [{"b_id": o.attempt.outbox_id, "b_status": o.status} for o in done.grouped],
        )
    if done.firings:
        stmt = _insert_ignore(conn, FiringRow.__table__)  # type: ignore[attr-defined]
        await conn.execute(
            stmt.on_conflict_do_nothing(),
            [
                {
                    "id": f.id,
                    "automation": f.automation,
                    "state": f.state,
                    "at": f.at,
                    "bucket": f.bucket,
                    "event_ids": f.event_ids,
                    "silenced": f.silenced,
                    "context": f.context,
                }
                for f in done.firings
            ],
        )
    if done.digests:
        rows = [
            {
                "id": digest.id,
                "firing_id": digest.id,
                "automation": digest.automation,
                "action_index": digest.action_index,
                "action": digest.action,
                "status": "pending",
                "attempts": 0,
                "created_at": digest.at,
                "next_attempt_at": digest.at,
                "last_error": None,
                "series": 0,
            }
            for digest in done.digests
        ]
        stmt = _insert_ignore(conn, outbox)
        await conn.execute(stmt.on_conflict_do_nothing(), rows)


def _outbox_row(intent: Intent, now: datetime) -> dict[str, Any]:
    return {
        "id": intent.id,
        "firing_id": intent.firing_id,
        "automation": intent.automation,
        "action_index": intent.action_index,
        "action": intent.action,
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "last_error": None,
        "series": 0,
    }


def _add_missing_columns(conn: Connection) -> None:
    """Columns added after a table was first created (no migrations yet): add them.

    ``create_all`` creates missing tables only; an older database gets the
    newer nullable/defaulted columns here, so it keeps working after an upgrade.
    """
    inspector = inspect(conn)
    tables = (OutboxRow.__table__, AttemptRow.__table__)  # type: ignore[attr-defined]
    for table in tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")


def _firing(row: Any) -> Firing:
    return Firing(
        id=row["id"],
        automation=row["automation"],
        state=row["state"],
        at=row["at"],
        bucket=row["bucket"],
        event_ids=row["event_ids"],
        context=row["context"],
        silenced=row["silenced"],
    )


PROCESSED_RETENTION = timedelta(days=2)
