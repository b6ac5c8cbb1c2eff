"""Durable engine state: firings, the action outbox, delivery attempts, processed ids.

Invariants (see automations/CONTRACTS.md):

* A firing's id is deterministic (``automations.engine.firing_id_for``), and the firing, its action
  intents, the processed event ids and the checkpoint are written in ONE
  transaction (:meth:`StateStore.commit_batch`). The bus offset is committed
  only after that transaction, so a crash at any instant either loses nothing
  (the batch is redelivered) or doubles nothing (ids already present are ignored).
* An outbox row's id is ``<firing id>:<action index>`` and doubles as the
  idempotency key handed to the target.

One module per side: ``model`` (tables and records), ``engine``
(processed ids, firings, checkpoints, the batch commit), ``delivery``
(outbox, claims, attempts, pauses, deliveries, replay), ``grouping`` and ``handoff``
(what the service and a delivery worker process tell each other).
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import SQLModel

from automations.state.delivery import DeliveryState
from automations.state.engine import EngineState
from automations.state.grouping import GroupingStore
from automations.state.handoff import HandoffState
from automations.state.model import add_missing_columns

__all__ = ["PROCESSED_RETENTION", "StateStore"]


class StateStore(EngineState, DeliveryState, GroupingStore, HandoffState):
    """Engine and dispatcher state on the same database as the event store."""

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
            await conn.run_sync(add_missing_columns)


PROCESSED_RETENTION = timedelta(days=2)
