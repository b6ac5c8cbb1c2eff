"""Cron expressions, as silences write them: parsed once, matched per minute. No I/O.

``minute hour day-of-month month day-of-week`` with ``*``, ``*/n``, ``a-b``,
``a-b/n``, ``a,b``, names (``jan``, ``mon``) and ``0``/``7`` both Sunday; when both
day fields are restricted either may match (Vixie cron). Here, below the YAML models,
so a silence's ``cron`` is checked at load (:mod:`automations.core.silences` uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Cron", "parse_cron"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (low, high, names) of each cron field; names map to low + index.
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed 5-field cron expression; :meth:`matches` a wall-clock minute."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is '*'
    any_weekday: bool  # day of week is '*'

    def matches(self, local: datetime) -> bool:
        if local.minute not in self.minutes or local.hour not in self.hours:
            return False
        if local.month not in self.months:
            return False
        day = local.day in self.days
        weekday = (local.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday


def parse_cron(expression: str) -> Cron:
    """Parse ``minute hour day-of-month month day-of-week``; ``ValueError`` says what is wrong."""
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"cron needs 5 fields (minute hour day-of-month month day-of-week), got "
            f"{len(parts)}; write e.g. '0 2 * * *' for 02:00 every day"
        )
    values = [_parse_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(day % 7 for day in values[4])
    return Cron(
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )


def _parse_field(
    text: str, name: str, low: int, high: int, names: tuple[str, ...]
) -> frozenset[int]:
    def number(token: str) -> int:
        lowered = token.lower()
        if lowered in names:
            return low + names.index(lowered) if name == "month" else names.index(lowered)
        if not token.isdigit():
            raise ValueError(f"cron {name} {token!r} is not a number; write {low}-{high}")
        value = int(token)
        if not low <= value <= high:
            raise ValueError(f"cron {name} {value} is out of range; write {low}-{high}")
        return value

    out: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cron {name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = number(start), number(end)
            if first > last:
                raise ValueError(f"cron {name} range {body!r} runs backwards; write low-high")
        else:
            first = number(body)
            last = high if step_text else first
        out.update(range(first, last + 1, step))
    return frozenset(out)
