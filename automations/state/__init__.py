"""Durable state on the event store's database: firings, the outbox, attempts, trigger state.

``model`` (tables and records), ``engine`` (processed ids, firings, checkpoints, the
batch commit), ``delivery`` (outbox, claims, attempts, pauses, replay), ``grouping``
(open notification groups), ``triggers`` (buckets, held followers, the event clock)
and ``store`` (:class:`StateStore`, all sides on one database).
"""

from automations.state.model import (
    AttemptRow,
    CheckpointRow,
    Firing,
    FiringRow,
    GroupingChange,
    GroupRow,
    Intent,
    OutboxRow,
    Outcome,
    OwedDigest,
    PausedRow,
    ProcessedRow,
)
from automations.state.store import PROCESSED_RETENTION, StateStore

__all__ = [
    "PROCESSED_RETENTION",
    "AttemptRow",
    "CheckpointRow",
    "Firing",
    "FiringRow",
    "GroupRow",
    "GroupingChange",
    "Intent",
    "OutboxRow",
    "Outcome",
    "OwedDigest",
    "PausedRow",
    "ProcessedRow",
    "StateStore",
]
