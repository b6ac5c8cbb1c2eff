"""The engine's side of ``StateStore``: processed ids, firings, checkpoints, the batch commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from automations._state_model import (
    CheckpointRow,
    Firing,
    FiringRow,
    Intent,
    OutboxRow,
    ProcessedRow,
    StoreBase,
    firing_of,
    firing_row,
    insert_ignore,
    intent_row,
    newest,
)


class AlreadyProcessed(Exception):
    """Some ids of an optimistic batch were processed before: nothing was written."""

    def __init__(self, fresh: set[str]) -> None:
        super().__init__(f"{len(fresh)} fresh ids")
        self.fresh = fresh


class EngineState(StoreBase):
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
        require_fresh: bool = False,
    ) -> None:
        """Write a batch's outcome atomically; duplicates of earlier writes are ignored.

        ``extra`` runs inside the same transaction (the engine's trigger state).
        ``require_fresh``: the caller evaluated ``processed`` without asking first
        (one round trip less); if any id was processed before, the transaction is
        rolled back and :class:`AlreadyProcessed` names the ids that were fresh.
        """
        processed_rows = [{"event_id": str(i), "at": now} for i in processed]
        async with self.engine.begin() as conn:
            if processed_rows:
                stmt = insert_ignore(conn, ProcessedRow.__table__)  # type: ignore[attr-defined]
                stmt = stmt.on_conflict_do_nothing()
                if require_fresh:
                    table = ProcessedRow.__table__  # type: ignore[attr-defined]
                    inserted = await conn.execute(stmt.returning(table.c.event_id), processed_rows)
                    fresh = {row[0] for row in inserted}
                    if len(fresh) != len(processed_rows):
                        raise AlreadyProcessed(fresh)
                else:
                    await conn.execute(stmt, processed_rows)
            if firings:
                stmt = insert_ignore(conn, FiringRow.__table__)  # type: ignore[attr-defined]
                await conn.execute(stmt.on_conflict_do_nothing(), [firing_row(f) for f in firings])
            if intents:
                stmt = insert_ignore(conn, OutboxRow.__table__)  # type: ignore[attr-defined]
                await conn.execute(
                    stmt.on_conflict_do_nothing(), [intent_row(i, now) for i in intents]
                )
            if checkpoint is not None:
                name, received = checkpoint
                stmt = insert_ignore(conn, CheckpointRow.__table__)  # type: ignore[attr-defined]
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
