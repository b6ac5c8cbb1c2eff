"""Notification grouping's side of ``StateStore``: open groups, written in one transaction.

See ``automations/delivery/grouping_stage.py`` for the stage that drives it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from automations.core.grouping import GroupingState
from automations.state.model import (
    AttemptRow,
    FiringRow,
    GroupingChange,
    GroupRow,
    OutboxRow,
    StoreBase,
    firing_row,
    insert_ignore,
    outbox_row,
)


class GroupingStore(StoreBase):
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
                stmt = insert_ignore(conn, table)
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
        stmt = insert_ignore(conn, FiringRow.__table__)  # type: ignore[attr-defined]
        await conn.execute(stmt.on_conflict_do_nothing(), [firing_row(f) for f in done.firings])
    if done.digests:
        rows = [
            outbox_row(
                id=digest.id,
                firing_id=digest.id,
                automation=digest.automation,
                action_index=digest.action_index,
                action=digest.action,
                at=digest.at,
            )
            for digest in done.digests
        ]
        stmt = insert_ignore(conn, outbox)
        await conn.execute(stmt.on_conflict_do_nothing(), rows)
