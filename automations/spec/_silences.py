"""Silences: when the actions of matching firings are muted (one-off or recurring)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator, model_validator

from automations.spec._base import Labels, OptionalDuration, Strict, as_list, check_timezone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SILENCE_DURATION = timedelta(days=7)
_CLOCK_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Each field of a 5-field cron expression and the values it takes, for error messages.
_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 (or L)"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat (0 and 7 are Sunday)"),
)
_CRON_SYNTAX = "'*', a range 'a-b', a step '*/n' or 'a-b/n', or a list 'a,b'"
_ANY_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)  # cronsim parses against a start; any will do


def check_cron(expression: str) -> str:
    """``expression`` if it is a 5-field cron expression (cronsim's grammar: Debian cron),
    else ``ValueError`` naming the field to fix."""
    parts = expression.split()
    if len(parts) != len(_CRON_FIELDS):  # cronsim also takes 6 (seconds): not here
        raise ValueError(
            f"cron needs 5 fields (minute hour day-of-month month day-of-week), got "
            f"{len(parts)}; write e.g. '0 2 * * *' for 02:00 every day"
        )
    try:
        CronSim(expression, _ANY_INSTANT)
    except CronSimError as exc:
        # cronsim says "Bad <field>"; find the field by trying each one alone.
        for index, (name, values) in enumerate(_CRON_FIELDS):
            alone = ["*"] * len(_CRON_FIELDS)
            alone[index] = parts[index]
            try:
                CronSim(" ".join(alone), _ANY_INSTANT)
            except CronSimError:
                raise ValueError(
                    f"cron {name} {parts[index]!r} is not valid; write {values}, {_CRON_SYNTAX}"
                ) from exc
        raise ValueError(
            f"cron {expression!r} never matches ({exc}): that day of month does not occur "
            f"in those months"
        ) from exc
    return expression


class WeeklyWindow(Strict):
    """Every ``days`` from ``start`` to ``end`` (``HH:MM`` wall time in ``timezone``).

    ``end`` at or before ``start`` ends on the next day (``22:00`` to ``06:00``); equal
    times mean 24 hours.
    """

    days: list[Weekday] = Field(min_length=1)
    start: str
    end: str
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _coerce_days(cls, value: Any) -> Any:
        value = as_list(value)
        if isinstance(value, list):
            return [day.lower()[:3] if isinstance(day, str) else day for day in value]
        return value

    @field_validator("start", "end")
    @classmethod
    def _check_clock(cls, value: str) -> str:
        if not _CLOCK_TIME.match(value):
            raise ValueError("must be a wall-clock time 'HH:MM' such as '22:00'; quote it")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return check_timezone(value)


class Silence(Strict):
    """Mutes the actions of firings whose labels match ``matchers`` while it is active.

    Active between ``starts`` and ``ends`` (one-off); or, when ``weekly`` or
    ``cron`` + ``duration`` is given, during each recurring window (``starts``/
    ``ends`` then optionally bound the recurrence). See :mod:`automations.core.silences`.
    """

    name: str = Field(min_length=1)
    comment: str = ""
    matchers: Labels = Field(min_length=1)
    starts: datetime | None = None
    ends: datetime | None = None
    weekly: list[WeeklyWindow] = Field(default_factory=list)
    cron: str | None = None
    duration: OptionalDuration = None
    timezone: str = "UTC"

    @field_validator("starts", "ends")
    @classmethod
    def _check_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("needs a UTC offset; write e.g. '2025-06-01T22:00:00+02:00' or '...Z'")
        return value

    @field_validator("duration")
    @classmethod
    def _check_length(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(0) < value <= MAX_SILENCE_DURATION:
            raise ValueError("must be positive and at most 7d; write e.g. '2h'")
        return value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _check_schedule(self) -> Silence:
        if self.weekly and self.cron is not None:
            raise ValueError("a silence takes either weekly or cron, not both; split it in two")
        if (self.cron is None) != (self.duration is None):
            raise ValueError(
                "cron and duration go together: write e.g. cron: '0 2 * * *', duration: 2h"
            )
        if not self.weekly and self.cron is None and (self.starts is None or self.ends is None):
            raise ValueError(
                "a one-off silence needs starts and ends (ISO 8601); "
                "for a recurring one write weekly: or cron: with duration:"
            )
        if self.starts is not None and self.ends is not None and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self
