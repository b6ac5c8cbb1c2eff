"""Default messages per event family, from real Prefect events with neutral keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from notifiers import default_message

FIXTURES = Path(__file__).parents[1] / "fixtures" / "prefect"


def neutral(value: Any) -> Any:
    """Drop Prefect's ``prefect.`` prefix from keys and string values, as ingestion does."""
    if isinstance(value, dict):
        return {k.removeprefix("prefect."): neutral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [neutral(v) for v in value]
    if isinstance(value, str):
        return value.removeprefix("prefect.")
    return value


def context(name: str, **extra: Any) -> dict[str, Any]:
    event = neutral(json.loads((FIXTURES / f"{name}.json").read_text()))
    return {"event": event, "automation": {"name": "etl failures"}, "firing": {}, **extra}


def test_failed_flow_run_says_what_where_since_and_links() -> None:
    """A failed run names run, flow, deployment, pool, state message, time and UI link."""
    message = default_message(
        context("flow_run_Failed_work_pool_deployment", ui_base_url="http://ui.local/")
    )
    assert message.subject == "Flow run 'daft-wallaby' of flow 'lab-failing-flow' failed"
    run_id = "flow-run.341a4f59-d16b-4605-b9d2-394746f80743"
    assert dict(message.attributes) == {
        "event": "flow-run.Failed",
        "automation": "etl failures",
        "resource_id": run_id,
        "kind": "flow run",
        "run": "daft-wallaby",
        "flow": "lab-failing-flow",
        "deployment": "lab-fail-pool",
        "work_pool": "lab-process",
        "tags": "lab, pool, pool-run",
        "state": "Failed",
        "state_type": "FAILED",
        "state_message": (
            "Flow run encountered an exception: RuntimeError: intentional failure: from work pool"
        ),
        "summary": (
            "Flow run encountered an exception: RuntimeError: intentional failure: from work pool"
        ),
        "since": "2026-11-21 11:36:31 UTC",
        "url": f"http://ui.local/resources/{run_id}",
        "url_label": "Open run",
    }
    body = message.body
    for text in (
        "Since: 2026-11-21 11:36:31 UTC",
        "Deployment: lab-fail-pool",
        "Work pool: lab-process",
        "State message: Flow run encountered an exception",
        f"http://ui.local/resources/{run_id}",
    ):
        assert text in body, text


def test_without_ui_base_url_there_is_no_link() -> None:
    """No ui_base_url, no url attribute and no dangling link text."""
    message = default_message(context("flow_run_Completed_deployment"))
    assert "url" not in message.attributes
    assert "None" not in message.body
    assert message.subject.endswith("completed")


@pytest.mark.parametrize(
    ("fixture", "subject", "kind"),
    [
        ("task_run_Completed", "Task run", "task run"),
        ("flow_run_Running_adhoc", "Flow run", "flow run"),
        ("deployment_ready", "Deployment 'lab-ok-served' is ready", "deployment"),
        ("work_pool_event", "Work pool 'lab-process' created", "work pool"),
        ("automation_triggered", "Automation 'lab: failing flow", "automation"),
    ],
)
def test_each_family_has_its_own_wording(fixture: str, subject: str, kind: str) -> None:
    """Runs, deployments, work pools and automations each get a fitting subject."""
    message = default_message(context(fixture))
    assert message.subject.startswith(subject), message.subject
    assert message.attributes["kind"] == kind
    assert message.body.startswith(message.subject)


def test_deployment_not_ready_reads_naturally() -> None:
    """deployment.not-ready says the deployment is not ready, since when, with its flow."""
    message = default_message(
        {
            "event": {
                "event": "deployment.not-ready",
                "occurred": "2026-11-21T10:00:00Z",
                "resource": {"resource.id": "deployment.1", "resource.name": "etl/prod"},
                "related": [
                    {"resource.id": "flow.1", "resource.role": "flow", "resource.name": "etl"}
                ],
            }
        }
    )
    assert message.subject == "Deployment 'etl/prod' is not ready"
    assert message.attributes["since"] == "2026-11-21 10:00:00 UTC"
    assert message.attributes["flow"] == "etl"


def test_unknown_event_falls_back_to_name_and_resource() -> None:
    """Anything else still says which event happened to which resource."""
    message = default_message(
        {"event": {"event": "backup.finished", "resource": {"resource.id": "db.main"}}}
    )
    assert message.subject == "backup.finished on 'db.main'"
    assert message.attributes["kind"] == "resource"


def test_empty_context_still_makes_a_message() -> None:
    """A context without an event yields a generic, non-empty message instead of raising."""
    message = default_message({})
    assert message.subject
    assert "None" not in message.subject + message.body


def test_duration_is_humanized_when_the_payload_has_one() -> None:
    """A payload duration in seconds becomes a readable duration attribute."""
    message = default_message(
        {
            "event": {
                "event": "flow-run.Completed",
                "resource": {"resource.id": "flow-run.1", "resource.name": "r"},
                "payload": {"total_run_time": 200},
            }
        }
    )
    assert message.attributes["duration"] == "3m 20s"


@pytest.mark.parametrize(
    ("ctx", "subject"),
    [
        (  # "Running but not finished": the run that started is the firing's event
            context(
                "flow_run_Running_adhoc",
                expected={"expect": ["flow-run.Completed", "flow-run.Failed"], "within_s": 7200},
            ),
            "Flow run 'eccentric-sheep' of flow 'lab-ok-flow': "
            "no flow-run.Completed or flow-run.Failed within 2h",
        ),
        (  # "no Completed within 26h": no event at all
            {
                "event": {},
                "automation": {"name": "nightly"},
                "expected": {"expect": ["flow-run.Completed"], "within_s": 93600},
            },
            "Automation 'nightly': no flow-run.Completed within 1d 2h",
        ),
    ],
)
def test_a_proactive_firing_says_what_did_not_happen(ctx: dict[str, Any], subject: str) -> None:
    """A Proactive firing names the events it expected and the window, not its event."""
    message = default_message(ctx)
    assert message.subject == subject
    assert message.body.startswith(subject + ".")
    assert "Event: " not in message.body
    assert "is running" not in message.body
    assert message.attributes["summary"] == subject.rsplit(": ", 1)[1]
    assert "state" not in message.attributes


def test_a_firing_without_an_event_is_not_called_event() -> None:
    """No event (a firing the engine made on a timer): the automation, not "event"."""
    message = default_message({"event": {}, "automation": {"name": "nightly"}})
    assert message.subject == "Automation 'nightly' fired"
    assert message.body == "Automation 'nightly' fired.\nAutomation: nightly"
