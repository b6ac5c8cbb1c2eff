"""What the Prefect import's parts share: errors, paths, names, durations, the warning list.

See :mod:`automations.prefect_import` for the mapping as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from automations.spec import UNIT_SECONDS

PREFIX = "prefect."

_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_CLOCK_DURATION = re.compile(
    r"^(?:(?P<d>\d+) days?,?\s*)?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)$"
)
_UNIT_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


class PrefectImportError(ValueError):
    """The Prefect document cannot be imported; names the source, line and path."""

    def __init__(self, source: str, path: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.path = path
        self.line = line
        self.reason = message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


def path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


@dataclass
class Automation:
    body: dict[str, Any]


class ConverterBase:
    """The conversion's state, and the warning and error helpers every part uses."""

    def __init__(self, source: str, scope_deployment_triggers: bool) -> None:
        self.source = source
        self.scope = scope_deployment_triggers
        self.warnings: list[str] = []
        self.channels: dict[str, dict[str, str]] = {}
        self.automations: list[Automation] = []
        self.names: set[str] = set()
        self.event_names: set[str] = set()
        # Prefect automation id → runbell name, for pause-/resume-automation.
        self.ids: dict[str, str] = {}
        self.pending_automation_refs: list[tuple[dict[str, Any], str, str, str]] = []

    def _warn(self, name: str, where: str, message: str) -> None:
        line = f"{name}: {where}: {message}" if where else f"{name}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)

    def _string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self._error(where, 'must be a text string; quote it, e.g. "text"')
        return value

    def _error(self, where: str, message: str) -> PrefectImportError:
        return PrefectImportError(self.source, where, message)

    def _duration(self, value: Any, where: str) -> str | float:
        """A Prefect duration (seconds, ISO 8601, ``H:MM:SS``) as runbell writes it."""
        return duration_out(to_seconds(value, self, where))


def discriminate(raw: dict[str, Any]) -> str:
    """Prefect's ``trigger_discriminator``: the type implied when ``type`` is missing."""
    if "triggers" in raw:
        return "compound" if "require" in raw else "sequence"
    if raw.get("posture") == "Metric":
        return "metric"
    return "event"


def strip(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def strip_id(glob: str) -> str:
    negated = glob.startswith("!")
    body = glob[1:] if negated else glob
    return ("!" if negated else "") + strip(body)


def trim(where: str) -> str:
    """A trigger path relative to the automation (drops the document prefix)."""
    if where.startswith("deployments["):
        return re.sub(r"^deployments\[\d+\]\.triggers\[\d+\]", "trigger", where)
    index = where.find("trigger")
    return where[index:] if index >= 0 else where


def event_triggers(trigger: dict[str, Any], where: str) -> Iterable[tuple[str, dict[str, Any]]]:
    if trigger.get("type") == "event":
        yield where, trigger
    for index, child in enumerate(trigger.get("triggers", [])):
        yield from event_triggers(child, f"{where}.triggers[{index}]")


def to_seconds(value: Any, converter: ConverterBase, where: str) -> float:
    if isinstance(value, bool):
        raise converter._error(where, "must be a duration in seconds, e.g. 600 or PT10M")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        iso = _ISO_DURATION.match(text)
        clock = _CLOCK_DURATION.match(text)
        unit = _UNIT_DURATION.match(text)
        if iso and text != "P" and not text.endswith("T"):
            parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
            seconds = (
                parts.get("w", 0) * 604800
                + parts.get("d", 0) * 86400
                + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60
                + parts.get("s", 0)
            )
        elif clock:
            seconds = (
                float(clock["d"] or 0) * 86400
                + float(clock["h"]) * 3600
                + float(clock["m"]) * 60
                + float(clock["s"])
            )
        elif unit:
            seconds = float(unit[1]) * UNIT_SECONDS[unit[2]]
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise converter._error(
                    where, f"{value!r} is not a duration; write seconds (600) or ISO 8601 (PT10M)"
                ) from None
    else:
        raise converter._error(where, "must be a duration in seconds, e.g. 600 or PT10M")
    if seconds < 0:
        raise converter._error(where, "must not be negative")
    return seconds


def duration_out(seconds: float) -> str | float:
    if seconds != int(seconds):
        return seconds
    whole = int(seconds)
    for unit, size in _UNITS:
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
