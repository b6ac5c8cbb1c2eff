"""Pure matching: globs, Prefect's ResourceSpecification semantics, event names, for_each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from automations.core.matching import bucket_key, compile_trigger, find_resource_label
from automations.spec import EventTrigger
from automations.spec.patterns import (
    LabelFilter,
    event_name_matches,
    glob_matches,
    related_matches,
    resource_matches,
)
from events.model import Event

RUN = {"resource.id": "flow-run.abc", "resource.name": "nightly", "env": "prod"}
FLOW = {"resource.id": "flow.f1", "resource.role": "flow", "resource.name": "etl"}
TAG_PROD = {"resource.id": "tag.production", "resource.role": "tag"}
TAG_NIGHTLY = {"resource.id": "tag.nightly", "resource.role": "tag"}
DEPLOYMENT = {"resource.id": "deployment.d1", "resource.role": "deployment"}


def _event(
    name: str = "flow-run.Failed",
    resource: Mapping[str, str] = RUN,
    related: Sequence[Mapping[str, str]] = (FLOW, TAG_PROD, TAG_NIGHTLY, DEPLOYMENT),
) -> Event:
    return Event(
        id=uuid4(),
        occurred=datetime(2026, 1, 1, tzinfo=UTC),
        event=name,
        resource=dict(resource),
        related=[dict(r) for r in related],
    )


def _trigger(**fields: Any) -> EventTrigger:
    return EventTrigger.model_validate({"type": "event", **fields})


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("flow-run.Failed", "flow-run.Failed", True),
        ("flow-run.Failed", "flow-run.FailedX", False),
        ("flow-run.*", "flow-run.abc", True),
        ("flow-run.*", "flow-run.", True),  # runbell: * matches the empty run
        ("Failed*", "Failed", True),  # Prefect's event_pattern (.+) would miss this
        ("*.Failed", "flow-run.Failed", True),  # * anywhere, not only trailing
        ("flow-*.Failed", "flow-run.Failed", True),
        ("flow-*.Failed", "flow-run.Crashed", False),
        ("flow-run.?ailed", "flow-run.Failed", True),
        ("flow-run.?ailed", "flow-run.ailed", False),
        ("a.b", "aXb", False),  # dots and other regex characters are literal
        ("[x]", "[x]", True),
        ("!flow-run.Failed", "flow-run.Crashed", True),
        ("!flow-run.*", "flow-run.abc", False),
        ("!flow-run.*", "task-run.abc", True),
        ("*", "", True),
        ("!x", None, False),  # a missing label never matches, even a negation
        ("*", None, False),
    ],
)
def test_glob(pattern: str, value: str | None, expected: bool) -> None:
    """Globs: * (including empty), ?, leading ! negation, literal everything else."""
    assert glob_matches(pattern, value) is expected


@pytest.mark.parametrize(
    ("spec", "labels", "expected"),
    [
        ({}, RUN, True),
        ({"resource.id": "flow-run.*"}, RUN, True),
        ({"resource.id": "task-run.*"}, RUN, False),
        ({"resource.id": "flow-run.*", "env": "prod"}, RUN, True),  # every key must match
        ({"resource.id": "flow-run.*", "env": "dev"}, RUN, False),
        ({"env": ["dev", "prod"]}, RUN, True),  # a list is any-of
        ({"env": ["dev", "staging"]}, RUN, False),
        ({"env": "!dev"}, RUN, True),
        ({"env": "!prod"}, RUN, False),
        ({"env": ["!prod", "prod"]}, RUN, True),  # Prefect: negated entries are any-of too
        ({"env": ["!dev", "!prod"]}, RUN, True),  # ... so two negations exclude nothing
        ({"team": "!data"}, RUN, False),  # missing label: negation still fails
        ({"team": "*"}, RUN, False),
        ({"env": []}, RUN, False),  # an empty list matches nothing
    ],
)
def test_resource_filter(spec: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    """Prefect's ResourceSpecification.matches: all keys, any-of values, missing never matches."""
    assert resource_matches(spec, labels) is expected


@pytest.mark.parametrize(
    ("specs", "related", "expected"),
    [
        ({}, [], True),  # empty filter: matches even with no related resources
        ([], [], True),
        ({"resource.role": "tag"}, [], False),
        ({"resource.role": "tag", "resource.id": "tag.production"}, [FLOW, TAG_PROD], True),
        ({"resource.role": "tag", "resource.id": "tag.staging"}, [FLOW, TAG_PROD], False),
        # one dict: all its keys must hold on the SAME related resource
        ({"resource.role": "flow", "resource.id": "tag.production"}, [FLOW, TAG_PROD], False),
        # a list: each dict by SOME related resource (different ones allowed)
        (
            [{"resource.role": "flow", "resource.name": "etl"}, {"resource.id": "tag.production"}],
            [FLOW, TAG_PROD],
            True,
        ),
        (
            [{"resource.role": "flow"}, {"resource.role": "deployment"}],
            [FLOW, TAG_PROD],
            False,
        ),
        ([{"resource.role": "tag"}, {}], [TAG_NIGHTLY], True),
    ],
)
def test_related_filter(
    specs: dict[str, Any] | list[dict[str, Any]],
    related: list[dict[str, str]],
    expected: bool,
) -> None:
    """match_related: each filter must be satisfied by some related resource."""
    assert related_matches(specs, related) is expected


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        ([], "anything.at-all", True),  # Prefect: empty expect means every event
        (["flow-run.Failed", "flow-run.Crashed"], "flow-run.Crashed", True),
        (["flow-run.Failed"], "flow-run.Completed", False),
        (["flow-run.*"], "flow-run.Failed", True),
        (["flow-run.*"], "task-run.Failed", False),
        (["flow-run.Fail*"], "flow-run.Fail", True),
        (["*.Failed"], "task-run.Failed", True),
        (["!flow-run.Completed"], "flow-run.Failed", True),
        (["flow-run.Failed"], "flow-run.FailedX", False),  # whole-name match
    ],
)
def test_event_name(patterns: list[str], name: str, expected: bool) -> None:
    """Event-name globs for expect/after; an empty list matches every name."""
    assert event_name_matches(patterns, name) is expected


def test_issue_example_trigger_matches_production_failures() -> None:
    """The issue's example trigger fires for a production run's failure only."""
    compiled = compile_trigger(
        _trigger(
            expect=["flow-run.Failed", "flow-run.Crashed"],
            match={"resource.id": "flow-run.*"},
            match_related={"resource.role": "tag", "resource.id": "tag.production"},
        )
    )
    assert compiled.matches(_event("flow-run.Failed"))
    assert compiled.matches(_event("flow-run.Crashed"))
    assert not compiled.matches(_event("flow-run.Completed"))
    assert not compiled.matches(_event(related=(FLOW, TAG_NIGHTLY)))
    assert not compiled.matches(_event(resource={"resource.id": "task-run.1"}))


def test_compiled_trigger_covers_after_events_too() -> None:
    """Like Prefect's event_pattern, a trigger is interested in after and expect names."""
    compiled = compile_trigger(_trigger(after="flow-run.Running", expect="flow-run.Completed"))
    assert compiled.matches(_event("flow-run.Running"))
    assert compiled.matches(_event("flow-run.Completed"))
    assert not compiled.matches(_event("flow-run.Failed"))
    assert compiled.starts_after("flow-run.Running")
    assert not compiled.expects("flow-run.Running")
    assert compiled.expects("flow-run.Completed")


def test_empty_expect_and_after() -> None:
    """No expect: every event counts; no after: nothing opens a window (as in Prefect)."""
    compiled = compile_trigger(_trigger())
    assert compiled.matches(_event("whatever.happened"))
    assert compiled.expects("whatever.happened")
    assert not compiled.starts_after("whatever.happened")


@pytest.mark.parametrize(
    ("for_each", "expected"),
    [
        ([], ()),
        (["resource.id"], ("flow-run.abc",)),
        (["resource.name", "resource.id"], ("flow-run.abc", "nightly")),  # sorted keys
        (["missing"], ("",)),
        (["related:flow:resource.id"], ("flow.f1",)),
        (["related:tag:resource.id"], ("tag.production",)),  # first related in the role
        (["related:flow:team"], ("",)),  # role found, label missing
        (["related:work-pool:resource.id"], ("",)),  # no resource in that role
        (["related:deployment:resource.id", "env"], ("prod", "deployment.d1")),
    ],
)
def test_for_each_bucket_key(for_each: list[str], expected: tuple[str, ...]) -> None:
    """Bucket keys follow Prefect's bucketing_key, including related:<role>:<label>."""
    event = _event()
    assert bucket_key(for_each, event) == expected
    assert compile_trigger(_trigger(for_each=for_each)).bucket_key(event) == expected


def test_related_label_falls_back_to_primary_resource() -> None:
    """With no related resource in the role, Prefect looks the whole key up on the resource."""
    event = _event(resource={"resource.id": "x", "related:pool:name": "odd"}, related=())
    assert find_resource_label(event, "related:pool:name") == "odd"


def test_label_filter_reports_when_it_matches_everything() -> None:
    """An empty filter is flagged so the engine can skip it."""
    assert LabelFilter({}).matches_everything
    assert not LabelFilter({"a": "b"}).matches_everything
