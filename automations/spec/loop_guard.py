"""The loop guard: reject automations whose own effects would fire them again. Pure.

Checked at load (the loader calls :func:`check_loops` for every automation), on
the models alone. For every event trigger in the automation (composite children
included) and every action in ``actions`` and ``actions_on_resolve``, the guard
builds the events that action will cause and asks whether the trigger would count
them: a **Reactive** trigger whose ``expect`` matches them (as many per firing as
``threshold``), or a **Proactive** trigger whose ``after`` matches them (it re-arms
itself and alarms again every window). The resources must match too:

* ``emit-event`` causes its own event, with exactly the labels written. A label
  whose value is a template (``{{ ... }}``) may be anything, so it matches; an
  event *name* that is a template is not judged.
* ``run-deployment`` causes a new run's ``flow-run.Scheduled``, ``Pending``,
  ``Running`` and one of ``Completed``/``Failed``/``Crashed``, with a fresh
  ``resource.id``, ``state-name``/``state-type`` labels, and the deployment as the
  related ``deployment`` (``resource.id: deployment.<deployment_id>`` or
  ``resource.name: <deployment>``; ``source: inferred``, no deployment or a
  templated id is the triggering event's deployment, which the trigger matched).
* ``retry-run`` causes the *same* run's ``flow-run.AwaitingRetry``, ``Pending``,
  ``Running`` and a terminal state: the resources the trigger matched, so only
  event names and state labels decide. Retrying on ``flow-run.Failed`` is a loop
  for as long as the run keeps failing.
* every firing also causes ``automation.triggered``/``automation.resolved`` and
  ``automation.action.*`` events on the automation's resource
  (:func:`automation_resource`); a trigger whose ``expect`` names those events
  (``automation.*``) and whose ``match`` admits its own resource loops. A trigger
  with an empty ``expect`` matches every name, these included: the engine must
  never feed an automation its own ``automation.*`` events (a runtime rule, so
  catch-all triggers stay legal), and must emit them on exactly that resource.

The guard reports what the configuration makes certain. Labels that come from the
triggering event (a templated value, an inferred deployment and its flow and tags,
the retried run itself) may be anything the trigger matched, so they match; labels
of a *new* run that the action does not name (its name, tags, flow, or the name of
a deployment selected by id) are unknown, so they do not. Metric triggers, and
cycles through *other* automations (A fires B fires A), are not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from automations.errors import Problem
from automations.spec import (
    Action,
    Automation,
    CompoundTrigger,
    EmitEventAction,
    EventTrigger,
    LabelSpec,
    RetryRunAction,
    RunDeploymentAction,
    SequenceTrigger,
    Trigger,
)
from automations.spec.patterns import EventNameFilter, glob_matches

__all__ = ["AUTOMATION_EVENTS", "Loop", "automation_resource", "check_loops", "find_loops"]

Loc = tuple[str | int, ...]

AUTOMATION_EVENTS = (
    "automation.triggered",
    "automation.resolved",
    "automation.action.triggered",
    "automation.action.executed",
    "automation.action.failed",
)
"""Events the engine and dispatcher emit about an automation, on :func:`automation_resource`."""

_NEW_RUN_ID = "flow-run.00000000-0000-0000-0000-000000000000"
_STATE_TYPES = {
    "Scheduled": "SCHEDULED",
    "AwaitingRetry": "SCHEDULED",
    "Pending": "PENDING",
    "Running": "RUNNING",
    "Completed": "COMPLETED",
    "Failed": "FAILED",
    "Crashed": "CRASHED",
}
_RUN_PROGRESS = ("Scheduled", "Pending", "Running")
_RETRY_PROGRESS = ("AwaitingRetry", "Pending", "Running")
_TERMINAL = ("Completed", "Failed", "Crashed")

Labels = Mapping[str, str | None]
"""Probe labels: ``None`` means "unknown: could be any value"."""


def automation_resource(name: str) -> dict[str, str]:
    """The resource of the events runbell emits about automation ``name``."""
    return {"resource.id": f"automation.{name}", "resource.name": name}


@dataclass(frozen=True, slots=True)
class Loop:
    """One way an automation retriggers itself; ``path`` is relative to the automation."""

    path: Loc
    message: str


@dataclass(frozen=True, slots=True)
class _Probe:
    """Events one action causes per firing: names (each at most once) and resources."""

    names: tuple[str, ...]
    resource: Labels
    resource_open: bool  # labels not listed may exist, with any value
    related: tuple[Labels, ...]
    related_open: frozenset[str] | None  # roles unknown extra related resources cannot have
    terminal: frozenset[str] = frozenset()  # names of which one run emits only one
    why: str = ""
    retry: bool = False  # the same run again: bounded when the trigger pins run-count


def find_loops(automation: Automation) -> list[Loop]:
    """Every (trigger, action) pair of ``automation`` that would retrigger it."""
    loops: list[Loop] = []
    probes: list[tuple[Loc, _Probe]] = []
    for field_name, actions in (
        ("actions", automation.actions),
        ("actions_on_resolve", automation.actions_on_resolve),
    ):
        for index, action in enumerate(actions):
            probe = _probe(action)
            if probe is not None:
                probes.append(((field_name, index), probe))
    own = _own_events(automation)
    for trigger_loc, trigger in _leaves(automation):
        counted = [
            (loc, probe, n)
            for loc, probe in probes
            if (n := _count(trigger, probe)) and not _bounded_retry(trigger, probe)
        ]
        # One firing's actions together must bring ``threshold`` events (Reactive);
        # a single re-arming ``after`` event is enough (Proactive, counted as threshold).
        if sum(n for _, _, n in counted) >= trigger.threshold:
            for action_loc, probe, _ in counted:
                loops.append(Loop(action_loc, _message(automation.name, probe.why, trigger_loc)))
        # An empty ``expect`` matches every name, runbell's own events included: the
        # engine never feeds an automation its own automation.* events, so only a
        # trigger that names them explicitly is reported here.
        if trigger.expect and _count(trigger, own) >= trigger.threshold:
            loops.append(Loop(trigger_loc, _message(automation.name, own.why, trigger_loc)))
    return loops


def _bounded_retry(trigger: EventTrigger, probe: _Probe) -> bool:
    """A retry that only fires for some ``run-count`` values ends: each rerun counts up.

    ("retry failed runs up to twice" is ``match: {run-count: ["1", "2"]}``.)
    """
    return probe.retry and bool(trigger.match.get("run-count"))


def check_loops(
    automation: Automation, problem: Callable[[Loc, str], Problem], prefix: Loc = ()
) -> list[Problem]:
    """:func:`find_loops` as loader problems; ``problem(loc, message)`` adds file and line."""
    return [problem((*prefix, *loop.path), loop.message) for loop in find_loops(automation)]


# -- probes ------------------------------------------------------------------


def _templated(value: str) -> bool:
    return "{{" in value or "{%" in value


def _known(labels: Mapping[str, str]) -> dict[str, str | None]:
    return {key: None if _templated(value) else value for key, value in labels.items()}


def _known_or_any(labels: Mapping[str, str | None]) -> dict[str, str | None]:
    return {k: None if v is not None and _templated(v) else v for k, v in labels.items()}


def _probe(action: Action) -> _Probe | None:
    if isinstance(action, EmitEventAction):
        if _templated(action.event):
            return None
        return _Probe(
            names=(action.event,),
            resource=_known(action.resource),
            resource_open=False,
            related=tuple(_known(labels) for labels in action.related),
            related_open=None,
            why=f"its emit-event action emits '{action.event}'",
        )
    if isinstance(action, RunDeploymentAction):
        deployment: dict[str, str | None] = {"resource.role": "deployment"}
        which = "the triggering deployment"
        if action.source != "inferred" and action.deployment_id is not None:
            deployment["resource.id"] = f"deployment.{action.deployment_id}"
            which = f"deployment {action.deployment_id}"
        elif action.source != "inferred" and action.deployment is not None:
            deployment["resource.name"] = action.deployment
            which = f"deployment {action.deployment}"
        known = _known_or_any(deployment)
        # The triggering event's deployment (and so its flow and tags) is one the
        # trigger matched; a selected deployment is only what the action names.
        inferred = len(deployment) == 1 or None in known.values()
        return _Probe(
            names=tuple(f"flow-run.{s}" for s in (*_RUN_PROGRESS, *_TERMINAL)),
            resource={"resource.id": _NEW_RUN_ID},
            resource_open=False,
            related=(known,),
            related_open=frozenset() if inferred else None,
            terminal=frozenset(f"flow-run.{s}" for s in _TERMINAL),
            why=f"its run-deployment action starts a run of {which} (flow-run.* events)",
        )
    if isinstance(action, RetryRunAction):
        return _Probe(
            names=tuple(f"flow-run.{s}" for s in (*_RETRY_PROGRESS, *_TERMINAL)),
            resource={"resource.id": None},
            resource_open=True,
            related=(),
            related_open=frozenset(),
            terminal=frozenset(f"flow-run.{s}" for s in _TERMINAL),
            why="its retry-run action reruns the same run (flow-run.* events); "
            "bound it with match: {run-count: [...]}",
            retry=True,
        )
    return None


def _own_events(automation: Automation) -> _Probe:
    return _Probe(
        names=AUTOMATION_EVENTS,
        resource=automation_resource(automation.name),
        resource_open=False,
        related=(),
        related_open=None,
        why="runbell emits automation.* events about it",
    )


# -- matching with unknowns --------------------------------------------------


def _leaves(automation: Automation) -> Iterator[tuple[Loc, EventTrigger]]:
    if automation.triggers is not None:
        for index, trigger in enumerate(automation.triggers):
            yield from _walk(("triggers", index), trigger)
    elif automation.trigger is not None:
        yield from _walk(("trigger",), automation.trigger)


def _walk(loc: Loc, trigger: Trigger) -> Iterator[tuple[Loc, EventTrigger]]:
    if isinstance(trigger, EventTrigger):
        yield loc, trigger
    elif isinstance(trigger, CompoundTrigger | SequenceTrigger):
        for index, child in enumerate(trigger.triggers):
            yield from _walk((*loc, "triggers", index), child)


def _count(trigger: EventTrigger, probe: _Probe) -> int:
    """How many of one firing's ``probe`` events ``trigger`` would count (0: none)."""
    if not _could_match(trigger.match, probe.resource, probe.resource_open):
        return 0
    if not all(_related_could_match(spec, probe) for spec in trigger.match_related):
        return 0
    names = [n for n in probe.names if _state_labels_match(trigger.match, n, probe)]
    if trigger.posture == "Proactive":
        after = EventNameFilter(trigger.after)
        return trigger.threshold if any(after.matches_any_of(n) for n in names) else 0
    counted = [n for n in names if EventNameFilter(trigger.expect).matches(n)]
    terminal = [n for n in counted if n in probe.terminal]
    return len(counted) - max(0, len(terminal) - 1)  # a run ends only once


def _state_labels_match(spec: LabelSpec, name: str, probe: _Probe) -> bool:
    """A run's state event carries ``state-name``/``state-type`` labels agreeing with its name."""
    if not probe.terminal:  # not a run lifecycle probe
        return True
    state = name.removeprefix("flow-run.")
    labels: dict[str, str | None] = {"state-name": state, "state-type": _STATE_TYPES[state]}
    return _could_match({k: v for k, v in spec.items() if k in labels}, labels, False)


def _could_match(spec: LabelSpec, labels: Labels, open_: bool) -> bool:
    for key, globs in spec.items():
        if key not in labels:
            if open_:
                continue
            return False
        value = labels[key]
        if value is not None and not any(glob_matches(glob, value) for glob in globs):
            return False
    return True


def _related_could_match(spec: LabelSpec, probe: _Probe) -> bool:
    if any(_could_match(spec, labels, probe.related_open is not None) for labels in probe.related):
        return True
    if probe.related_open is None:
        return False
    # An unknown related resource (a flow, a tag, a work pool) may satisfy the filter,
    # unless the filter only admits roles the probe has already fully described.
    roles = spec.get("resource.role")
    return roles is None or any(_admits_other_role(glob, probe.related_open) for glob in roles)


def _admits_other_role(glob: str, excluded: frozenset[str]) -> bool:
    if glob.startswith("!") or "*" in glob or "?" in glob:
        return True
    return glob not in excluded


def _message(name: str, why: str, trigger_loc: Loc) -> str:
    return (
        f"automation '{name}' would retrigger itself: {why}, and its own "
        f"{_render(trigger_loc)} counts those events; "
        "narrow the trigger's expect/match (e.g. match: {resource.id: '!automation.*'}) "
        "or change the action so its events are not the ones this trigger counts"
    )


def _render(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
