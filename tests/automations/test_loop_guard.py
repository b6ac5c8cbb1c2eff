"""The loop guard: automations whose own effects would fire them again are rejected at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from automations.errors import ConfigError
from automations.spec import Automation
from automations.spec.loader import load_config
from automations.spec.loop_guard import automation_resource, find_loops

FAILED_IN_ETL = (
    "{type: event, expect: [flow-run.Failed], "
    "match_related: {resource.role: deployment, resource.id: deployment.etl}}"
)

CASES: list[tuple[str, str, str, list[tuple[str | int, ...]]]] = [
    (
        "emit-event emitting the expected event with matching labels loops",
        "{type: event, expect: [etl.alert], match: {resource.id: 'etl.*'}}",
        "[{type: emit-event, event: etl.alert, resource: {resource.id: etl.x}}]",
        [("actions", 0)],
    ),
    (
        "emit-event of another event name is fine",
        "{type: event, expect: [etl.alert], match: {resource.id: 'etl.*'}}",
        "[{type: emit-event, event: etl.summary, resource: {resource.id: etl.x}}]",
        [],
    ),
    (
        "emit-event whose resource the trigger does not match is fine",
        "{type: event, expect: [etl.alert], match: {resource.id: 'etl.*'}}",
        "[{type: emit-event, event: etl.alert, resource: {resource.id: ops.x}}]",
        [],
    ),
    (
        "emit-event missing a label the trigger needs is fine",
        "{type: event, expect: [etl.alert], match: {team: data}}",
        "[{type: emit-event, event: etl.alert, resource: {resource.id: etl.x}}]",
        [],
    ),
    (
        "a templated label may be anything, so it matches",
        "{type: event, expect: [etl.alert], match: {resource.id: 'etl.*'}}",
        "[{type: emit-event, event: etl.alert, "
        "resource: {resource.id: \"{{ event.resource['resource.id'] }}\"}}]",
        [("actions", 0)],
    ),
    (
        "a templated event name is not judged",
        "{type: event, expect: [etl.alert]}",
        '[{type: emit-event, event: "{{ event.event }}", resource: {resource.id: etl.x}}]',
        [],
    ),
    (
        "emit-event from actions_on_resolve loops too",
        "{type: event, expect: [etl.alert]}",
        "[{type: do-nothing}]",
        [("actions_on_resolve", 0)],
    ),
    (
        "below threshold one emitted event cannot refire",
        "{type: event, expect: [etl.alert], threshold: 2, within: 60}",
        "[{type: emit-event, event: etl.alert, resource: {resource.id: etl.x}}]",
        [],
    ),
    (
        "two emitted events reach threshold 2",
        "{type: event, expect: [etl.alert], threshold: 2, within: 60}",
        "[{type: emit-event, event: etl.alert, resource: {resource.id: etl.x}}, "
        "{type: emit-event, event: etl.alert, resource: {resource.id: etl.y}}]",
        [("actions", 0), ("actions", 1)],
    ),
    (
        "a Proactive trigger re-armed by its own after event loops",
        "{type: event, posture: Proactive, after: [etl.start], expect: [etl.done], within: 1h}",
        "[{type: emit-event, event: etl.start, resource: {resource.id: etl.x}}]",
        [("actions", 0)],
    ),
    (
        "a Proactive trigger given its expected event is satisfied, not looping",
        "{type: event, posture: Proactive, after: [etl.start], expect: [etl.done], within: 1h}",
        "[{type: emit-event, event: etl.done, resource: {resource.id: etl.x}}]",
        [],
    ),
    (
        "retry-run on flow-run.Failed retries forever while the run fails",
        FAILED_IN_ETL,
        "[{type: retry-run}]",
        [("actions", 0)],
    ),
    (
        "retry-run on a deployment event is fine",
        "{type: event, expect: [deployment.not-ready]}",
        "[{type: retry-run}]",
        [],
    ),
    (
        "retry-run when the trigger pins another state name is fine",
        "{type: event, expect: ['flow-run.*'], match: {state-name: Late}}",
        "[{type: retry-run}]",
        [],
    ),
    (
        "run-deployment of the watched deployment loops",
        FAILED_IN_ETL,
        "[{type: run-deployment, deployment_id: etl}]",
        [("actions", 0)],
    ),
    (
        "run-deployment of another deployment is fine",
        FAILED_IN_ETL,
        "[{type: run-deployment, deployment_id: report}]",
        [],
    ),
    (
        "run-deployment of the triggering deployment (inferred) loops",
        "{type: event, expect: [flow-run.Completed], "
        "match_related: {resource.role: deployment, resource.name: etl}}",
        "[{type: run-deployment, source: inferred}]",
        [("actions", 0)],
    ),
    (
        "run-deployment by id when the trigger names deployments is not certain",
        "{type: event, expect: [flow-run.Completed], "
        "match_related: {resource.role: deployment, resource.name: etl}}",
        "[{type: run-deployment, deployment_id: 0f6f9c8e}]",
        [],
    ),
    (
        "a child of a compound trigger counts",
        "{type: compound, require: any, triggers: [{type: event, expect: [x.y]}, "
        f"{FAILED_IN_ETL}]}}",
        "[{type: retry-run}]",
        [("actions", 0)],
    ),
    (
        "expecting automation events of itself loops",
        "{type: event, expect: ['automation.*']}",
        "[{type: do-nothing}]",
        [("trigger",)],
    ),
    (
        "expecting automation events of others only is fine",
        "{type: event, expect: ['automation.*'], match: {resource.name: '!loopy'}}",
        "[{type: do-nothing}]",
        [],
    ),
    (
        "a catch-all trigger is left to the engine's runtime rule",
        "{type: event}",
        "[{type: do-nothing}]",
        [],
    ),
]


def _automation(trigger: str, actions: str, name: str = "loopy") -> Automation:
    resolve = "[{type: emit-event, event: etl.alert, resource: {resource.id: etl.x}}]"
    body = f"name: {name}\ntrigger: {trigger}\nactions: {actions}\n"
    if actions == "[{type: do-nothing}]" and "etl.alert" in trigger:
        body += f"actions_on_resolve: {resolve}\n"
    return Automation.model_validate(yaml.safe_load(body))


@pytest.mark.parametrize(
    ("trigger", "actions", "paths"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_loops(trigger: str, actions: str, paths: list[tuple[str | int, ...]]) -> None:
    """Each row's automation retriggers itself exactly through the listed actions/triggers."""
    loops = find_loops(_automation(trigger, actions))
    assert [loop.path for loop in loops] == paths
    for loop in loops:
        assert "automation 'loopy' would retrigger itself" in loop.message


def test_several_triggers_are_each_checked() -> None:
    """With triggers: [...], the looping one is named by its index in the message."""
    automation = Automation.model_validate(
        yaml.safe_load(
            "name: loopy\n"
            "triggers:\n"
            "  - {type: event, expect: [x.y]}\n"
            "  - {type: event, expect: ['automation.triggered']}\n"
            "actions: [{type: do-nothing}]\n"
        )
    )
    (loop,) = find_loops(automation)
    assert loop.path == ("triggers", 1)
    assert "its own triggers[1] counts those events" in loop.message


def test_automation_resource_names_the_automation() -> None:
    """runbell's own events carry the automation's name as resource id and name."""
    assert automation_resource("a") == {"resource.id": "automation.a", "resource.name": "a"}


def test_loader_rejects_a_loop_with_file_and_line(tmp_path: Path) -> None:
    """load_config reports a loop at the offending action's line, with the automation's name."""
    file = tmp_path / "loops.yaml"
    file.write_text(
        "automations:\n"
        "  - name: fine\n"
        "    trigger: {type: event, expect: [etl.alert]}\n"
        "    actions: [{type: do-nothing}]\n"
        "  - name: loopy\n"
        "    trigger: {type: event, expect: [etl.alert]}\n"
        "    actions:\n"
        "      - type: do-nothing\n"
        "      - type: emit-event\n"
        "        event: etl.alert\n"
        "        resource: {resource.id: etl.x}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config([file], {})
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.path) == (str(file), 9, "automations[1].actions[1]")
    assert "automation 'loopy' would retrigger itself" in problem.message
    assert "emit-event action emits 'etl.alert'" in problem.message


def test_retry_bounded_by_run_count_is_not_a_loop() -> None:
    """'Retry failed runs up to twice' (match on run-count) is allowed; unbounded is not."""
    from automations.spec import Automation
    from automations.spec.loop_guard import find_loops

    def automation(match: dict[str, object]) -> Automation:
        return Automation.model_validate(
            {
                "name": "retry-failures",
                "trigger": {"type": "event", "expect": ["flow-run.Failed"], "match": match},
                "actions": [{"type": "retry-run"}],
            }
        )

    assert find_loops(automation({"run-count": ["1", "2"]})) == []
    assert find_loops(automation({}))
