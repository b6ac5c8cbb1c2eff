"""Errors raised by ``automations``.

    AutomationsError
    └── ConfigError       automation YAML could not be loaded; ``.problems`` lists every mistake

Third-party errors (PyYAML, pydantic, Jinja) are converted at the boundary: the
loader never lets them escape, it turns each into a :class:`Problem`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class AutomationsError(Exception):
    """Root of every error raised by the ``automations`` package."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in one file: where it is and what to write instead.

    ``line`` is 1-based; ``None`` when the file could not be read at all.
    ``path`` is the key path inside the document, e.g. ``automations[0].trigger.posture``
    (empty for the document itself).
    """

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(AutomationsError):
    """The automation configuration is invalid; ``problems`` holds every mistake found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"automation configuration has {count} {noun}:"]
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)
