"""Pure, precompiled matching of events against trigger filters (the engine's hot path).

Semantics follow Prefect's ``ResourceSpecification`` (``prefect/server/events/schemas/
events.py``) and ``EventTrigger`` (``prefect/server/events/schemas/automations.py``):

* a label filter maps label keys to one glob or a list of globs; *every* key must
  match, and a list matches when *any* of its globs matches (negated ones included,
  so ``["!a", "!b"]`` matches every present value, exactly as in Prefect);
* a leading ``!`` negates a glob, but a **missing label never matches**, negated
  or not (``{"x": "!a"}`` rejects a resource without ``x``);
* an empty filter matches everything, even an event without related resources;
  a non-empty ``match_related`` filter needs *some* related resource to match it;
* ``match_related`` as a list: *each* filter must be satisfied by some related
  resource (not necessarily the same one);
* an empty ``expect`` matches every event name; otherwise the event name must match
  one of ``expect`` or ``after`` (Prefect's ``event_pattern``); ``after`` empty
  never "starts" anything;
* ``for_each`` keys are sorted; ``related:<role>:<label>`` reads the label of the
  first related resource with that role; a missing value buckets as ``""``.

Where runbell deliberately differs from Prefect:

* ``*`` may appear anywhere and matches any run of characters **including the
  empty one**, and ``?`` matches one character. Prefect only honours a trailing
  ``*`` for labels, and compiles event-name ``*`` to ``.+`` so ``flow-run.Failed*``
  misses ``flow-run.Failed``; runbell uses one rule for labels and event names.
* Event names match the whole name; Prefect's ``event_pattern`` uses ``re.match``
  (a prefix match, so ``flow-run.Failed`` would also accept ``flow-run.FailedX``).
* ``!`` negation also works in ``expect``/``after`` (Prefect's ``expects()``
  honours it, its ``event_pattern`` does not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from automations.spec import EventTrigger
from automations.spec.patterns import EventNameFilter, LabelFilter, LabelFilterSpec
from events.model import Event

_RESOURCE_ROLE = "resource.role"
_RELATED = "related"


def find_resource_label(event: Event, label: str) -> str | None:
    """Prefect's ``Event.find_resource_label``, including ``related:<role>:<label>``.

    For ``related:<role>:<label>`` the first related resource in ``role`` answers
    (even if it lacks the label); with no resource in that role the whole key is
    looked up on the primary resource, as Prefect does.
    """
    directive, _, related_label = label.rpartition(":")
    directive, _, role = directive.partition(":")
    if directive == _RELATED:
        for related in event.related:
            if related.get(_RESOURCE_ROLE) == role:
                return related.get(related_label)
    return event.resource.get(label)


def bucket_key(for_each: Iterable[str], event: Event) -> tuple[str, ...]:
    """Prefect's ``bucketing_key``: values of the sorted ``for_each`` labels, ``""`` if missing."""
    return tuple(find_resource_label(event, label) or "" for label in sorted(set(for_each)))


@dataclass(frozen=True, slots=True)
class ResourceFilter:
    """A trigger's compiled ``match`` and ``match_related`` (event and metric triggers alike)."""

    match: LabelFilter
    match_related: tuple[LabelFilter, ...]

    @classmethod
    def of(cls, match: LabelFilterSpec, match_related: Iterable[LabelFilterSpec]) -> ResourceFilter:
        return cls(LabelFilter(match), tuple(LabelFilter(spec) for spec in match_related))

    def covers(self, resource: Mapping[str, str], related: Sequence[Mapping[str, str]]) -> bool:
        if not self.match.includes((resource,)):
            return False
        return all(spec.includes(related) for spec in self.match_related)


@dataclass(frozen=True, slots=True)
class CompiledTrigger:
    """An :class:`EventTrigger` with every glob compiled once; see the module docstring."""

    resources: ResourceFilter
    expect: EventNameFilter
    after: EventNameFilter
    covered_names: EventNameFilter
    for_each: tuple[str, ...]

    def covers_resources(
        self, resource: Mapping[str, str], related: Sequence[Mapping[str, str]]
    ) -> bool:
        return self.resources.covers(resource, related)

    def covers_name(self, name: str) -> bool:
        """The event name is of interest: one of ``expect`` or ``after`` (empty ``expect``: any)."""
        return self.covered_names.matches(name)

    def matches(self, event: Event) -> bool:
        """Prefect's ``covers``: the name is of interest and the resources match."""
        return self.covers_name(event.event) and self.covers_resources(
            event.resource, event.related
        )

    def expects(self, name: str) -> bool:
        """The event counts toward the threshold (empty ``expect``: every event)."""
        return self.expect.matches(name)

    def starts_after(self, name: str) -> bool:
        """The event opens a window; always False when ``after`` is empty (as in Prefect)."""
        return self.after.matches_any_of(name)

    def bucket_key(self, event: Event) -> tuple[str, ...]:
        """:func:`bucket_key` (``for_each`` is sorted already)."""
        for_each = self.for_each
        if not for_each:
            return ()
        if len(for_each) == 1 and ":" not in for_each[0]:  # the usual case: one own label
            return (event.resource.get(for_each[0]) or "",)
        return tuple(find_resource_label(event, label) or "" for label in for_each)


def compile_trigger(trigger: EventTrigger) -> CompiledTrigger:
    """Compile ``trigger``'s filters once; the result is immutable and safe to share."""
    covered = [*trigger.expect, *trigger.after] if trigger.expect else []
    return CompiledTrigger(
        resources=ResourceFilter.of(trigger.match, trigger.match_related),
        expect=EventNameFilter(trigger.expect),
        after=EventNameFilter(trigger.after),
        covered_names=EventNameFilter(covered),
        for_each=tuple(sorted(set(trigger.for_each))),
    )
