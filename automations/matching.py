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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from automations.spec import EventTrigger
from events.model import Event

_RESOURCE_ROLE = "resource.role"
_RELATED = "related"

LabelFilterSpec = Mapping[str, str | Sequence[str]]


def _compile_glob(pattern: str) -> Callable[[str | None], bool]:
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    test: Callable[[str], bool]
    if not negated and "*" not in body and "?" not in body:
        # The common case, one call: a missing label (None) is never equal.
        return lambda value: value == body
    if "*" not in body and "?" not in body:
        test = body.__eq__
    elif "?" not in body and body.endswith("*") and "*" not in body[:-1]:
        test = _startswith(body[:-1])
    else:
        parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in body)
        fullmatch = re.compile("".join(parts), re.DOTALL).fullmatch

        def test(value: str) -> bool:
            return fullmatch(value) is not None

    def matches(value: str | None) -> bool:
        if value is None:  # Prefect: a missing label never matches, even a negation.
            return False
        return test(value) is not negated

    return matches


def _startswith(prefix: str) -> Callable[[str], bool]:
    def test(value: str) -> bool:
        return value.startswith(prefix)

    return test


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Callable[[str | None], bool]:
    """A predicate for one glob (``*``, ``?``, leading ``!``); ``None`` (missing) is False."""
    return _compile_glob(pattern)


def glob_matches(pattern: str, value: str | None) -> bool:
    """Does ``value`` match the glob ``pattern``? A missing value never matches."""
    return compile_glob(pattern)(value)


class LabelFilter:
    """A compiled label filter (Prefect's ``ResourceSpecification``)."""

    __slots__ = ("_single", "_tests")

    def __init__(self, spec: LabelFilterSpec) -> None:
        tests = []
        for label, expected in spec.items():
            globs = [expected] if isinstance(expected, str) else list(expected)
            tests.append((label, tuple(compile_glob(glob) for glob in globs)))
        self._tests: tuple[tuple[str, tuple[Callable[[str | None], bool], ...]], ...] = tuple(tests)
        # label → its one glob, when every label has exactly one (the usual filter).
        self._single: tuple[tuple[str, Callable[[str | None], bool]], ...] | None = (
            tuple((label, globs[0]) for label, globs in tests)
            if all(len(globs) == 1 for _, globs in tests)
            else None
        )

    @property
    def matches_everything(self) -> bool:
        return not self._tests

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Every label key matches at least one of its globs."""
        if self._single is not None:
            for label, glob in self._single:  # noqa: SIM110 (hot path: no generator)
                if not glob(labels.get(label)):
                    return False
            return True
        for label, globs in self._tests:
            value = labels.get(label)
            if not any(glob(value) for glob in globs):
                return False
        return True

    def includes(self, candidates: Iterable[Mapping[str, str]]) -> bool:
        """An empty filter is always satisfied; otherwise some candidate must match."""
        if not self._tests:
            return True
        for candidate in candidates:  # noqa: SIM110 (hot path: no generator)
            if self.matches(candidate):
                return True
        return False


class EventNameFilter:
    """Compiled event-name globs; an empty list matches every name."""

    __slots__ = ("_globs",)

    def __init__(self, patterns: Iterable[str]) -> None:
        self._globs = tuple(compile_glob(pattern) for pattern in patterns)

    def __bool__(self) -> bool:
        return bool(self._globs)

    def matches(self, name: str) -> bool:
        return not self._globs or any(glob(name) for glob in self._globs)

    def matches_any_of(self, name: str) -> bool:
        """Like :meth:`matches`, but an empty list matches nothing."""
        return any(glob(name) for glob in self._globs)


def event_name_matches(patterns: Sequence[str], name: str) -> bool:
    """Prefect's ``expects``: true if ``patterns`` is empty or any glob matches ``name``."""
    return EventNameFilter(patterns).matches(name)


def resource_matches(spec: LabelFilterSpec, labels: Mapping[str, str]) -> bool:
    """Prefect's ``ResourceSpecification.matches`` for one set of labels."""
    return LabelFilter(spec).matches(labels)


def related_matches(
    specs: LabelFilterSpec | Sequence[LabelFilterSpec], related: Sequence[Mapping[str, str]]
) -> bool:
    """``match_related``: each filter must be satisfied by some related resource."""
    filters = [specs] if isinstance(specs, Mapping) else list(specs)
    return all(LabelFilter(spec).includes(related) for spec in filters)


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
