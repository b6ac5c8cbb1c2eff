"""Silences: label matchers plus a schedule that mute a firing's actions. No I/O.

A silence (Alertmanager's idea, runbell's YAML) matches a firing when every key
of ``matchers`` matches one of its globs (``*``, ``?``, leading ``!`` negation,
:mod:`automations.core.matching` rules: a missing label never matches, negated or not)
in the firing's labels, built by :func:`firing_labels`:

* ``automation``: the automation's name;
* the bucket labels (``for_each`` keys, e.g. ``related:deployment:resource.name``);
* the triggering event's resource labels (``resource.id``, ``resource.name``, ...);
* ``related:<role>:<label>`` for the first related resource of each role (as in
  ``for_each``).

Later sources win, and ``automation`` cannot be overridden by an event.

Schedules, all evaluated at one instant ``at`` (the engine passes the firing's
``at``, so a replay decides the same way):

* one-off: active on ``[starts, ends)``;
* ``weekly``: each window is active from ``start`` on each of ``days`` to ``end``
  (the next day when ``end <= start``), as wall-clock times in its ``timezone``
  (``zoneinfo``), so a ``22:00``-``06:00`` window stays ``22:00``-``06:00`` local
  across a DST change (the night is one hour shorter or longer). A wall time in a
  spring-forward gap is read with the offset before the change, an ambiguous one
  (fall back) as its first occurrence (``fold=0``);
* ``cron`` + ``duration``: active for ``duration`` after each time the 5-field cron
  expression matches, in ``timezone``. The matcher is our own (:mod:`automations.spec.cron`,
  about 60 lines) rather than a dependency: ``minute hour day-of-month month
  day-of-week`` with ``*``, ``*/n``, ``a-b``, ``a-b/n``, ``a,b``, names (``jan``,
  ``mon``) and ``0``/``7`` both Sunday; when both day fields are restricted either
  may match (Vixie cron). Wall times that do not exist (spring forward) never
  match; those that occur twice (fall back) match twice. ``duration`` is capped at
  7 days, so a lookup scans at most 10,080 minutes.

With ``weekly`` or ``cron``, ``starts``/``ends`` (each optional) bound the
recurrence: nothing is silenced before ``starts`` or from ``ends`` on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from automations.spec import WEEKDAYS, Silence, WeeklyWindow
from automations.spec.cron import Cron, parse_cron
from automations.spec.patterns import LabelFilter
from events.model import Event

__all__ = ["Cron", "SilenceSet", "firing_labels", "is_silenced", "parse_cron"]

_RESOURCE_ROLE = "resource.role"
_MINUTE = timedelta(minutes=1)


def firing_labels(
    automation: str, bucket: Mapping[str, str], event: Event | None
) -> dict[str, str]:
    """The labels silences match on: the event's, its related ones, the bucket, the name."""
    labels: dict[str, str] = {}
    if event is not None:
        labels.update(event.resource)
        for related in reversed(event.related):  # the first resource of a role wins
            role = related.get(_RESOURCE_ROLE, "")
            labels.update({f"related:{role}:{key}": value for key, value in related.items()})
    labels.update(bucket)
    labels["automation"] = automation
    return labels


class _Compiled:
    __slots__ = ("cron", "matcher", "silence", "weekly", "zone")

    def __init__(self, silence: Silence) -> None:
        self.silence = silence
        self.matcher = LabelFilter(silence.matchers)
        self.cron = parse_cron(silence.cron) if silence.cron is not None else None
        self.zone = ZoneInfo(silence.timezone)
        self.weekly = tuple(_Weekly.of(window) for window in silence.weekly)

    def active(self, at: datetime) -> bool:
        silence = self.silence
        if silence.starts is not None and at < silence.starts:
            return False
        if silence.ends is not None and at >= silence.ends:
            return False
        if self.weekly:
            return any(window.active(at) for window in self.weekly)
        if self.cron is not None and silence.duration is not None:
            return self._cron_active(self.cron, silence.duration, at)
        return True  # one-off: inside [starts, ends)

    def _cron_active(self, cron: Cron, duration: timedelta, at: datetime) -> bool:
        # A start at s silences [s, s + duration): look back over whole minutes.
        minute = at.astimezone(UTC).replace(second=0, microsecond=0)
        earliest = at - duration
        while minute > earliest:
            if cron.matches(minute.astimezone(self.zone)):
                return True
            minute -= _MINUTE
        return False


@dataclass(frozen=True, slots=True)
class _Weekly:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def of(cls, window: WeeklyWindow) -> _Weekly:
        return cls(
            frozenset(WEEKDAYS.index(day) for day in window.days),
            time.fromisoformat(window.start.zfill(5)),
            time.fromisoformat(window.end.zfill(5)),
            ZoneInfo(window.timezone),
        )

    def active(self, at: datetime) -> bool:
        today = at.astimezone(self.zone).date()
        crosses = self.end <= self.start
        # Only a window that started today or (crossing midnight) yesterday can hold ``at``.
        for day in (today - timedelta(days=1), today) if crosses else (today,):
            if day.weekday() not in self.days:
                continue
            begin = datetime.combine(day, self.start, tzinfo=self.zone)
            end_day = day + timedelta(days=1) if crosses else day
            finish = datetime.combine(end_day, self.end, tzinfo=self.zone)
            # Compare in UTC: aware datetimes sharing a tzinfo compare as naive wall times.
            if begin.astimezone(UTC) <= at.astimezone(UTC) < finish.astimezone(UTC):
                return True
        return False


class SilenceSet:
    """Compiled silences, built once per loaded config; :meth:`match` is pure."""

    __slots__ = ("_compiled",)

    def __init__(self, silences: Sequence[Silence]) -> None:
        self._compiled = tuple(_Compiled(silence) for silence in silences)

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def match(self, labels: Mapping[str, str], at: datetime) -> Silence | None:
        """The first silence (in file order) whose matchers hold and that is active at ``at``."""
        for compiled in self._compiled:
            if compiled.matcher.matches(labels) and compiled.active(at):
                return compiled.silence
        return None


def is_silenced(
    silences: Sequence[Silence], labels: Mapping[str, str], at: datetime
) -> Silence | None:
    """The silence muting a firing with ``labels`` at ``at`` (aware), or ``None``.

    Compiles ``silences`` on each call; the engine keeps a :class:`SilenceSet`.
    """
    return SilenceSet(silences).match(labels, at)
