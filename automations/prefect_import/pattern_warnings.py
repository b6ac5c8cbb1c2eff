"""Warnings where runbell's event-name patterns match differently from Prefect's."""

from __future__ import annotations

import re

from automations.prefect_import.common import ConverterBase, event_triggers, path
from automations.spec.patterns import compile_glob

# Prefect event names (prefix dropped) that the prefix/glob checks compare patterns
# against, together with every event name written in the document. Not exhaustive.
_STATES = (
    "Scheduled",
    "Late",
    "AwaitingRetry",
    "AwaitingConcurrencySlot",
    "Pending",
    "Running",
    "Retrying",
    "Paused",
    "Suspended",
    "Resuming",
    "Cancelling",
    "Cancelled",
    "Completed",
    "Failed",
    "Crashed",
)
_KNOWN_EVENTS: tuple[str, ...] = (
    *(f"flow-run.{state}" for state in _STATES),
    "flow-run.heartbeat",
    *(f"task-run.{state}" for state in _STATES),
    "deployment.ready",
    "deployment.not-ready",
    "deployment.disabled",
    "work-pool.ready",
    "work-pool.not-ready",
    "work-pool.paused",
    "work-queue.ready",
    "work-queue.not-ready",
    "work-queue.paused",
    "automation.triggered",
    "automation.resolved",
    "automation.action.triggered",
    "automation.action.executed",
    "automation.action.failed",
)


class PatternWarnings(ConverterBase):
    def _pattern_warnings(self) -> None:
        candidates = set(_KNOWN_EVENTS) | self.event_names
        for automation in self.automations:
            name = automation.body["name"]
            for where, trigger in event_triggers(automation.body["trigger"], "trigger"):
                for key in ("expect", "after"):
                    for pattern in trigger.get(key, []):
                        self._pattern_warning(name, path(where, key), pattern, candidates)

    def _pattern_warning(self, name: str, where: str, pattern: str, candidates: set[str]) -> None:
        if pattern.startswith("!"):
            return
        prefect = re.compile(re.escape(pattern).replace("\\*", ".+")).match
        runbell = compile_glob(pattern)
        empty = pattern.replace("*", "")
        if "*" in pattern and not empty.endswith((".", "-", "_")) and empty:
            self._warn(
                name,
                where,
                f"{pattern!r} now also matches {empty!r}: runbell's '*' matches the empty string, "
                "Prefect's (compiled to '.+') does not",
            )
        runbell_only = sorted(c for c in candidates if runbell(c) and not prefect(c) and c != empty)
        if runbell_only:
            self._warn(
                name,
                where,
                f"{pattern!r} now also matches {runbell_only[0]!r}, which Prefect's pattern did "
                "not ('?' is a literal character in Prefect)",
            )
        prefix_only = sorted(c for c in candidates if prefect(c) and not runbell(c))
        if prefix_only:
            self._warn(
                name,
                where,
                f"{pattern!r}: Prefect matched event names by prefix (e.g. {prefix_only[0]!r}); "
                "runbell matches the whole name, add '*' to keep the prefix match",
            )
