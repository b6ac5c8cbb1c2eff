"""Metric triggers: success rate, duration and lateness over a range, firing_for, resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest

from automations.core.metrics import MetricEvaluator, MetricState
from automations.core.triggers import TriggerFiring
from automations.errors import ConfigError
from automations.spec import MetricTrigger
from automations.spec.loader import load_config
from events.model import Event

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)

AUTOMATION = """
automations:
  - name: m
    trigger:
      type: metric
      match: {{resource.id: "flow-run.*"}}
      match_related: {{resource.role: deployment, resource.name: etl}}
      for_each: {for_each}
      metric: {{name: {name}, operator: "{op}", threshold: {threshold}, range: 5m, firing_for: 5m}}
    actions: [{{type: do-nothing}}]
"""

Step = tuple[float, str, str, dict[str, Any]]  # (minute, state, run, extra)


def _evaluator(
    tmp_path: Path, name: str, op: str, threshold: float, for_each: str = "[]"
) -> MetricEvaluator:
    text = AUTOMATION.format(name=name, op=op, threshold=threshold, for_each=for_each)
    path = tmp_path / "a.yaml"
    path.write_text(text, encoding="utf-8")
    (automation,) = load_config([path], {}).automations
    assert isinstance(automation.trigger, MetricTrigger)
    return MetricEvaluator(automation.name, "trigger", automation.trigger)


def _event(minute: float, state: str, run: str, extra: dict[str, Any], index: int) -> Event:
    deployment = extra.get("deployment", "etl")
    return Event.model_validate(
        {
            "id": extra.get("id") or str(uuid5(NAMESPACE_URL, f"{index}")),
            "occurred": T0 + timedelta(minutes=minute),
            "event": f"flow-run.{state}",
            "resource": {"resource.id": f"flow-run.{run}"},
            "related": [
                {
                    "resource.id": f"deployment.{deployment}",
                    "resource.role": "deployment",
                    "resource.name": deployment,
                }
            ],
            "payload": extra.get("payload", {}),
        }
    )


def _run(
    evaluator: MetricEvaluator, steps: list[Step], until: float, roundtrip: bool = False
) -> list[tuple[str, float, dict[str, str]]]:
    """Feed events at their time, fire every deadline as the engine's timer would."""
    state = MetricState()
    fired: list[TriggerFiring] = []

    def settle(limit: datetime) -> None:
        nonlocal state
        while (deadline := evaluator.next_deadline(state)) is not None and deadline <= limit:
            outcome = evaluator.on_time(deadline, state)
            fired.extend(outcome.firings)
            state = outcome.state

    for index, (minute, name, run, extra) in enumerate(steps):
        event = _event(minute, name, run, extra, index)
        settle(event.occurred)
        outcome = evaluator.on_event(event, event.occurred, state)
        fired.extend(outcome.firings)
        state = MetricState.from_json(outcome.state.to_json()) if roundtrip else outcome.state
    settle(T0 + timedelta(minutes=until))
    return [(f.state, (f.at - T0).total_seconds() / 60, f.bucket) for f in fired]


def _scheduled(minute: float) -> dict[str, Any]:
    due = (T0 + timedelta(minutes=minute)).isoformat()
    return {"payload": {"validated_state": {"state_details": {"scheduled_time": due}}}}


CASES: list[tuple[str, str, str, float, list[Step], list[tuple[str, float]]]] = [
    (
        "success rate below 0.5 for 5m fires, and resolves 5m after it recovers",
        "successes",
        "<",
        0.5,
        [
            (0, "Completed", "r1", {}),
            (1, "Failed", "r2", {}),
            (2, "Failed", "r3", {}),
            (4, "Failed", "r4", {}),
            (6, "Failed", "r5", {}),
            (8, "Completed", "r6", {}),
            (9, "Completed", "r7", {}),
            (10, "Completed", "r8", {}),
        ],
        [("triggered", 7), ("resolved", 14)],
    ),
    (
        "a breach shorter than firing_for never fires",
        "successes",
        "<",
        0.5,
        [
            (0, "Failed", "r1", {}),
            (3, "Completed", "r2", {}),
            (3.5, "Completed", "r3", {}),
        ],
        [],
    ),
    (
        "cancelled runs count neither as successes nor failures",
        "successes",
        "<",
        0.9,
        [(0, "Completed", "r1", {}), (1, "Cancelled", "r2", {}), (2, "Cancelled", "r3", {})],
        [],
    ),
    (
        "a redelivered failure counts once",
        "successes",
        "<",
        0.5,
        [
            (0, "Completed", "r1", {}),
            (1, "Failed", "r2", {"id": "00000000-0000-0000-0000-0000000000f1"}),
            (1, "Failed", "r2", {"id": "00000000-0000-0000-0000-0000000000f1"}),
            (1, "Failed", "r2", {"id": "00000000-0000-0000-0000-0000000000f1"}),
        ],
        [],
    ),
    (
        "runs of another deployment are not counted",
        "successes",
        "<",
        0.5,
        [(0, "Failed", "r1", {"deployment": "other"}), (1, "Failed", "r2", {"deployment": "x"})],
        [],
    ),
    (
        "one 15-minute run above 600s fires after firing_for and resolves when it leaves the range",
        "duration",
        ">",
        600,
        [(0, "Running", "r1", {}), (15, "Completed", "r1", {})],
        [("triggered", 20), ("resolved", 25)],
    ),
    (
        "a terminal state without a seen Running gives no duration",
        "duration",
        ">",
        600,
        [(15, "Failed", "r1", {})],
        [],
    ),
    (
        "lateness from the Scheduled event's scheduled_time to Running",
        "lateness",
        ">",
        60,
        [(0, "Scheduled", "r1", _scheduled(0)), (3, "Running", "r1", {})],
        [("triggered", 8), ("resolved", 13)],
    ),
    (
        "lateness from the Running payload's expected_start_time",
        "lateness",
        ">=",
        120,
        [
            (
                2,
                "Running",
                "r1",
                {"payload": {"expected_start_time": T0.isoformat()}},
            )
        ],
        [("triggered", 7), ("resolved", 12)],
    ),
    (
        "a run without a known expected start has no lateness",
        "lateness",
        ">",
        60,
        [(0, "Scheduled", "r1", {}), (30, "Running", "r1", {})],
        [],
    ),
    (
        "an on-time run keeps lateness low: nothing fires",
        "lateness",
        ">",
        60,
        [(0, "Scheduled", "r1", _scheduled(1)), (0.5, "Running", "r1", {})],
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "op", "threshold", "steps", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_metric_firings(
    tmp_path: Path,
    name: str,
    op: str,
    threshold: float,
    steps: list[Step],
    expected: list[tuple[str, float]],
) -> None:
    """Each table row's events yield exactly the expected firings at event-time instants."""
    evaluator = _evaluator(tmp_path, name, op, threshold)
    fired = _run(evaluator, steps, until=60)
    assert [(state, at) for state, at, _ in fired] == expected
    assert _run(evaluator, steps, until=60, roundtrip=True) == fired


def test_for_each_keeps_one_metric_per_deployment(tmp_path: Path) -> None:
    """With for_each, a failing deployment fires alone and its bucket labels say which."""
    evaluator = _evaluator(
        tmp_path, "successes", "<", 0.5, for_each="[related:deployment:resource.name]"
    )
    evaluator = MetricEvaluator(
        "m",
        "trigger",
        evaluator.trigger.model_copy(update={"match_related": []}),
    )
    steps: list[Step] = [
        (0, "Failed", "r1", {"deployment": "a"}),
        (0, "Completed", "r2", {"deployment": "b"}),
    ]
    fired = _run(evaluator, steps, until=60)
    assert fired == [
        ("triggered", 5, {"related:deployment:resource.name": "a"}),
        ("resolved", 10, {"related:deployment:resource.name": "a"}),
    ]


def test_late_timer_call_fires_at_the_exact_instant(tmp_path: Path) -> None:
    """on_time called long after a deadline still stamps each firing at its own instant."""
    evaluator = _evaluator(tmp_path, "successes", "<", 0.5)
    state = MetricState()
    event = _event(0, "Failed", "r1", {}, 0)
    state = evaluator.on_event(event, event.occurred, state).state
    assert evaluator.next_deadline(state) == T0 + timedelta(minutes=5)
    outcome = evaluator.on_time(T0 + timedelta(hours=1), state)
    assert [(f.state, f.at) for f in outcome.firings] == [
        ("triggered", T0 + timedelta(minutes=5)),
        ("resolved", T0 + timedelta(minutes=10)),
    ]
    assert outcome.state.windows == {}
    assert outcome.firings[0].event_ids == (str(event.id),)


METRIC_MISTAKES = [
    ("{name: speed, operator: '<', threshold: 1}", "automations[0].trigger.metric.name", "one of"),
    (
        "{name: successes, operator: '=', threshold: 0.5}",
        "automations[0].trigger.metric.operator",
        "one of",
    ),
    (
        "{name: successes, operator: '<', threshold: 90}",
        "automations[0].trigger.metric.threshold",
        "fraction",
    ),
    (
        "{name: duration, operator: '>', threshold: 60, range: 60s}",
        "automations[0].trigger.metric.range",
        "at least 300s",
    ),
    (
        "{name: duration, operator: '>', threshold: 60, firing_for: 1m}",
        "automations[0].trigger.metric.firing_for",
        "at least 300s",
    ),
    ("{name: duration, threshold: 60}", "automations[0].trigger.metric.operator", "missing"),
]


@pytest.mark.parametrize(("metric", "path", "phrase"), METRIC_MISTAKES)
def test_bad_metric_yaml_is_reported_with_file_line_and_path(
    tmp_path: Path, metric: str, path: str, phrase: str
) -> None:
    """A wrong metric query names the file, the metric line and the key, and how to fix it."""
    file = tmp_path / "bad.yaml"
    file.write_text(
        "automations:\n"
        "  - name: m\n"
        "    trigger:\n"
        "      type: metric\n"
        f"      metric: {metric}\n"
        "    actions: [{type: do-nothing}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config([file], {})
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.path) == (str(file), 5, path)
    assert phrase in problem.message
