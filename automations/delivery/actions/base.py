"""What every action executor shares: its inputs (``Job``, ``Runtime``) and its outcome.

An executor is a plain async callable ``(action, job, runtime) -> SendResult``
that makes exactly one attempt and never raises for an outcome: retryability is
data (5xx, 429, timeouts retryable; other 4xx, bad templates, bad config not).
The dispatcher owns backoff, dead letters, fallbacks and recording.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from automations.delivery.orchestrators.base import RunController
from automations.spec import Action
from automations.state import Firing, OutboxRow, StateStore
from events.clock import Clock
from events.model import Event
from notifiers import HttpClient, Notifier

__all__ = [
    "Emit",
    "InvalidAction",
    "Job",
    "RunController",
    "Runtime",
    "StoredAction",
]

Emit = Callable[[Sequence[Event]], Awaitable[Any]]
"""Publishes events (the service's ingestion): returns once they are durable."""


@dataclass(frozen=True, slots=True)
class InvalidAction:
    """A stored action that no longer validates against the spec (the action types
    changed between firing and delivery): its attempt fails, not retryable, with
    ``reason``, so the row is dead-lettered with it instead of stopping the dispatcher.

    ``type``: the stored ``type`` (``"?"`` when it has none), for logs and events.
    """

    type: str
    reason: str


StoredAction = Action | InvalidAction
"""An outbox row's action as the dispatcher reads it: the typed spec model, parsed once."""


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt of one outbox row: the row, its action, its firing and the template context.

    ``action`` is ``row.action`` (the durable JSON form) parsed once, when the row
    was claimed (:func:`automations.delivery.actions.load_action`).

    ``prepared``: what the executor would compute first off the loop, computed
    already (a notify's rendered message, or the exception rendering raised), when
    the dispatcher rendered a whole claimed batch in one worker-thread hop.
    """

    row: OutboxRow
    action: StoredAction
    firing: Firing
    context: Mapping[str, Any]
    prepared: Any = None

    @property
    def key(self) -> str:
        """The idempotency key: the outbox id, the same for every attempt and replay."""
        return self.row.id


@dataclass(slots=True)
class Runtime:
    """What executors may use; built once by the dispatcher's owner (the service)."""

    state: StateStore
    clock: Clock
    channels: Mapping[str, Notifier] = field(default_factory=dict)
    controllers: Mapping[str, RunController] = field(default_factory=dict)
    emit: Emit | None = None
    http: HttpClient | None = None

    def controller(self, name: str | None) -> RunController | str:
        """The named orchestrator (or the only one); a reason string when there is none."""
        if name is not None:
            found = self.controllers.get(name)
            if found is None:
                known = ", ".join(sorted(self.controllers)) or "none configured"
                return f"unknown orchestrator {name!r} (known: {known})"
            return found
        if len(self.controllers) == 1:
            [controller] = self.controllers.values()
            return controller
        if not self.controllers:
            return "no orchestrator configured: add 'orchestrators:' to the YAML"
        return "several orchestrators are configured: name one with 'orchestrator:'"
