"""Silences: when the actions of matching firings are muted (one-off or recurring)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from automations.spec._base import Labels, OptionalDuration, Strict, as_list, check_timezone
from automations.spec.cron import parse_cron

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SILENCE_DURATION = timedelta(days=7)
_CLOCK_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


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
        if value is not None:
            parse_cron(value)
        return value

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
