"""The engine: consume event batches, match triggers, record firings and intents.

The engine never talks to Slack or an orchestrator: it writes firings and action
intents to the durable outbox in one transaction with the processed event ids,
and only then returns, so the bus commits the batch after the state is durable.
A redelivered event id is skipped (it is in ``processed_events``), and a firing
id is deterministic, so replaying a batch can never produce a second firing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from automations.matching import CompiledTrigger, compile_trigger
from automations.spec import Automation, Config, EventTrigger
from automations.state import Firing, Intent, StateStore, firing_id
from events.clock import Clock
from events.model import Event

log = structlog.get_logger("runbell.engine")

CHECKPOINT = "engine"


@dataclass(frozen=True, slots=True)
class _Compiled:
    automation: Automation
    index: int
    trigger: EventTrigger
    matcher: CompiledTrigger


class Engine:
    """Reactive evaluation of the loaded automations over event batches."""

    def __init__(
        self,
        config: Config,
        state: StateStore,
        clock: Clock,
        *,
        on_intents: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.on_intents = on_intents
        self._compiled = [
            _Compiled(automation, 0, automation.trigger, compile_trigger(automation.trigger))
            for automation in config.automations
            if automation.enabled and isinstance(automation.trigger, EventTrigger)
        ]

    async def handle(self, events: list[Event]) -> None:
        """Process one batch; returns only once its outcome is durable."""
        fresh = await self.state.unprocessed([e.id for e in events])
        firings: list[Firing] = []
        intents: list[Intent] = []
        done: set[Any] = set()
        for event in events:
            if event.id not in fresh or event.id in done:
                continue
            done.add(event.id)
            for firing, owed in self.evaluate(event):
                firings.append(firing)
                intents.extend(owed)
        received = [e.received for e in events if e.received is not None]
        await self.state.commit_batch(
            processed=done,
            firings=firings,
            intents=intents,
            now=self.clock.now(),
            checkpoint=(CHECKPOINT, max(received)) if received else None,
        )
        for firing in firings:
            log.info(
                "automation_fired",
                automation=firing.automation,
                firing=firing.id,
                bucket=firing.bucket,
                triggering_event=firing.event_ids[0],
            )
        if intents and self.on_intents is not None:
            self.on_intents()

    def evaluate(self, event: Event) -> list[tuple[Firing, list[Intent]]]:
        """Pure: the firings (and their intents) that ``event`` causes on its own."""
        out: list[tuple[Firing, list[Intent]]] = []
        for compiled in self._compiled:
            matcher = compiled.matcher
            if not (matcher.matches(event) and matcher.expects(event.event)):
                continue
            bucket = dict(zip(matcher.for_each, matcher.bucket_key(event), strict=True))
            at = event.received or event.occurred
            firing = Firing(
                id=firing_id(
                    compiled.automation.name, compiled.index, _key(bucket), event.id, "triggered"
                ),
                automation=compiled.automation.name,
                state="triggered",
                at=at,
                bucket=bucket,
                event_ids=[str(event.id)],
                context=_context(compiled.automation, event),
            )
            intents = [
                Intent(firing.id, firing.automation, index, action.model_dump(mode="json"))
                for index, action in enumerate(compiled.automation.actions)
            ]
            out.append((firing, intents))
        return out


def _key(bucket: dict[str, str]) -> str:
    return "\x1e".join(f"{k}={v}" for k, v in sorted(bucket.items()))


def _context(automation: Automation, event: Event) -> dict[str, Any]:
    as_json = event.model_dump(mode="json", exclude_none=True)
    return {
        "automation": {"name": automation.name, "description": automation.description},
        "event": as_json,
        "events": [as_json],
    }
