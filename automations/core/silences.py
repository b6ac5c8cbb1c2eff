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
  expression matches, as wall-clock times in ``timezone``. The expression is read by
  cronsim (Debian cron's grammar: ``*``, ``*/n``, ``a-b``, ``a-b/n``, ``a,b``, names
  such as ``jan`` and ``mon``, ``0``/``7`` both Sunday, and also ``L``, ``LW``,
  ``5#2``, ``5L``); when both day fields are restricted either may match, unless one
  starts with ``*``. cronsim walks naive wall-clock minutes and the zone is applied
  here, so wall times that do not exist (spring forward) never match and those that
  occur twice (fall back) match twice (cronsim's own zone handling would shift the
  first and run the second once, like cron; a silence is about wall-clock windows).
  ``duration`` is capped at 7 days.

With ``weekly`` or ``cron``, ``starts``/``ends`` (each optional) bound the
recurrence: nothing is silenced before ``starts`` or from ``ends`` on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from automations.spec import WEEKDAYS, Silence, WeeklyWindow
from automations.spec.patterns import LabelFilter
from events.model import Event

__all__ = ["SilenceSet", "firing_labels", "is_silenced"]

_RESOURCE_ROLE = "resource.role"
_MINUTE = timedelta(minutes=1)
_NONE = timedelta(0)


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
        self.cron = silence.cron  # checked by the spec (spec._silences.check_cron)
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

    def _cron_active(self, cron: str, duration: timedelta, at: datetime) -> bool:
        """Whether the cron starts at an instant ``s`` with ``at - duration < s <= at``."""
        zone = self.zone
        earliest = at - duration
        # The wall-clock span of that window, widened by the offset change inside it
        # (duration <= 7 days holds at most one DST change, so the two ends bound it).
        offsets = [moment.astimezone(zone).utcoffset() or _NONE for moment in (earliest, at)]
        low = earliest.astimezone(UTC).replace(tzinfo=None) + min(offsets)
        high = at.astimezone(UTC).replace(tzinfo=None) + max(offsets)
        start = high.replace(second=0, microsecond=0) + _MINUTE  # reverse starts below it
        for wall in CronSim(cron, start, reverse=True):  # naive: calendar minutes, newest first
            if wall <= low:
                return False
            for fold in (0, 1):  # an ambiguous wall time is two instants
                instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
                if instant.astimezone(zone).replace(tzinfo=None) != wall:
                    continue  # in a spring-forward gap: it never happens
                if earliest < instant <= at:
                    return True
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
