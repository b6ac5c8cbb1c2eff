"""The pattern language of the YAML: globs over labels and event names. Pure.

``*`` matches any run of characters including the empty one, ``?`` one character,
a leading ``!`` negates; a missing label never matches, negated or not. Label
filters and event-name filters are compiled once; :mod:`automations.core.matching`
applies them to events (the full semantics, and where they differ from Prefect's,
are in its docstring). Here because the loader's loop guard reads them too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

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
