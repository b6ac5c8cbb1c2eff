"""The candidate index: which automations can care about an event.

Built from exact event names and exact resource ids (the event's own and its
related resources'), so K automations that each watch a different deployment
cost about what one does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from automations.spec import (
    Automation,
    CompoundTrigger,
    EventTrigger,
    MetricTrigger,
    SequenceTrigger,
)
from events.model import Event

_GLOB = set("*?![]")


class CandidateIndex:
    """Which automations can care about an event, from exact names and resource ids.

    An automation is indexed by name when every event trigger in it lists only
    exact names in ``expect``/``after``; within a name, by resource id when every
    event trigger pins ``resource.id`` exactly in ``match`` or in a ``match_related``
    entry. Anything else (globs, negation, empty ``expect``, a resolvable
    ``for_each`` trigger that must see every event of its bucket) is checked for
    every event.
    """

    def __init__(self, automations: Iterable[Automation]) -> None:
        self._by_name: dict[str, tuple[dict[str, list[str]], list[str]]] = {}
        self._always: list[str] = []
        for automation in automations:
            roots = [trigger for _, trigger in automation.roots()]
            nodes = [node for root in roots for node in _event_triggers(root)]
            names = _exact_names(nodes)
            if (
                names is None
                or any(_has_metric(root) for root in roots)
                or (automation.actions_on_resolve and any(n.for_each for n in nodes))
            ):
                self._always.append(automation.name)
                continue
            ids = _exact_ids(nodes)
            for name in names:
                by_id, unindexed = self._by_name.setdefault(name, ({}, []))
                if ids is None:
                    unindexed.append(automation.name)
                else:
                    for resource_id in ids:
                        by_id.setdefault(resource_id, []).append(automation.name)

    def candidates(self, event: Event) -> list[str]:
        found = list(self._always)
        entry = self._by_name.get(event.event)
        if entry is None:
            return found
        by_id, unindexed = entry
        found.extend(unindexed)
        if by_id:
            seen: set[str] = set()
            for resource_id in (event.resource_id, *(r["resource.id"] for r in event.related)):
                for name in by_id.get(resource_id, ()):
                    if name not in seen:
                        seen.add(name)
                        found.append(name)
        return found


def _event_triggers(trigger: Any) -> Iterable[EventTrigger]:
    if isinstance(trigger, EventTrigger):
        yield trigger
    elif isinstance(trigger, CompoundTrigger | SequenceTrigger):
        for child in trigger.triggers:
            yield from _event_triggers(child)


def _has_metric(trigger: Any) -> bool:
    if isinstance(trigger, MetricTrigger):
        return True
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        return any(_has_metric(child) for child in trigger.triggers)
    return False


def _exact(value: str) -> bool:
    return not (_GLOB & set(value))


def _exact_names(nodes: list[EventTrigger]) -> set[str] | None:
    names: set[str] = set()
    for node in nodes:
        patterns = [*node.expect, *node.after]
        if not node.expect or not all(_exact(p) for p in patterns):
            return None
        names.update(patterns)
    return names


def _exact_ids(nodes: list[EventTrigger]) -> set[str] | None:
    ids: set[str] = set()
    for node in nodes:
        pinned = [node.match.get("resource.id")] + [
            spec.get("resource.id") for spec in node.match_related
        ]
        choice = next((p for p in pinned if p and all(_exact(v) for v in p)), None)
        if choice is None:
            return None
        ids.update(choice)
    return ids


__all__ = ["CandidateIndex"]
