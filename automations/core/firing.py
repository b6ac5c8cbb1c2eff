"""A trigger's decision and the key of its state: shared by every evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import orjson

from events.model import isoformat


def state_key(path: str, bucket: tuple[str, ...] = ()) -> str:
    """The key of one trigger path's bucket, e.g. ``["trigger","flow-run.1"]``."""
    return orjson.dumps([path, *bucket]).decode()


@dataclass(frozen=True, slots=True)
class TriggerFiring:
    """A decision to run ``actions`` (triggered) or ``actions_on_resolve`` (resolved)."""

    automation: str
    trigger: str
    state: Literal["triggered", "resolved"]
    at: datetime
    bucket: dict[str, str]
    event_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """Deterministic: the same evaluation always yields the same key (idempotency)."""
        # ``at`` is part of it: a Proactive bucket fires at every window end with the
        # same last event; ``at`` (arrival or deadline) is stored, so still deterministic.
        cause = self.event_ids[0] if self.event_ids else ""
        labels = orjson.dumps(self.bucket, option=orjson.OPT_SORT_KEYS).decode()
        moment = isoformat(self.at)
        return (
            f"{self.automation}\x1f{self.trigger}\x1f{labels}\x1f{self.state}"
            f"\x1f{cause}\x1f{moment}"
        )
