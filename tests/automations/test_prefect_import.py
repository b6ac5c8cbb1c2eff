"""`runbell import prefect`: Prefect automations and deployment triggers → runbell YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from automations.prefect_import import ACTION_MAP, ImportResult, PrefectImportError, convert
from automations.spec import ACTION_TYPES, TRIGGER_TYPES, EventTrigger
from automations.spec.loader import load_config

FIXTURES = Path(__file__).parents[1] / "fixtures"
PREFECT = FIXTURES / "prefect_automations"
REST = FIXTURES / "prefect" / "rest" / "16_automation_create.json"

# Every action type in prefect/events/actions.py (ActionTypes), with the fields it requires.
PREFECT_ACTIONS: dict[str, dict[str, Any]] = {
    "do-nothing": {},
    "run-deployment": {
        "source": "selected",
        "deployment_id": "1efb2492-c02e-4438-8cf7-50628406c4a4",
    },
    "pause-deployment": {"source": "inferred"},
    "resume-deployment": {"source": "inferred"},
    "cancel-flow-run": {},
    "change-flow-run-state": {"state": "FAILED", "message": "stopped by automation"},
    "suspend-flow-run": {},
    "resume-flow-run": {},
    "send-notification": {
        "block_document_id": "5b2a1c0e-7f3d-4a51-9e0b-2d6c8f4a9b17",
        "body": "{{ event.event }}",
    },
    "call-webhook": {"block_document_id": "128e0a71-45c4-4840-a168-40c41af41d82"},
    "pause-automation": {"source": "inferred"},
    "resume-automation": {"source": "inferred"},
    "pause-work-queue": {"source": "inferred"},
    "resume-work-queue": {"source": "inferred"},
    "pause-work-pool": {"source": "inferred"},
    "resume-work-pool": {"source": "inferred"},
    "declare-incident": {},
}
EXPECTED_ACTIONS: dict[str, str | None] = {
    "do-nothing": "do-nothing",
    "run-deployment": "run-deployment",
    "pause-deployment": None,
    "resume-deployment": None,
    "cancel-flow-run": "cancel-run",
    "change-flow-run-state": "change-run-state",
    "suspend-flow-run": None,
    "resume-flow-run": None,
    "send-notification": "notify",
    "call-webhook": "call-webhook",
    "pause-automation": "pause-automation",
    "resume-automation": "resume-automation",
    "pause-work-queue": None,
    "resume-work-queue": None,
    "pause-work-pool": None,
    "resume-work-pool": None,
    "declare-incident": None,
}


def _automation(trigger: dict[str, Any], actions: list[dict[str, Any]] | None = None) -> str:
    return json.dumps(
        {"name": "a", "trigger": trigger, "actions": actions or [{"type": "do-nothing"}]}
    )


def _doc(result: ImportResult) -> dict[str, Any]:
    loaded = yaml.safe_load(result.yaml)
    assert isinstance(loaded, dict)
    return loaded


def _by_name(result: ImportResult) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in _doc(result)["automations"]}


def _supported(trigger: dict[str, Any]) -> bool:
    if trigger["type"] not in TRIGGER_TYPES:
        return False
    return all(_supported(child) for child in trigger.get("triggers", []))


def _load_supported(result: ImportResult, tmp_path: Path) -> tuple[list[str], Any]:
    """Load, with runbell's loader, the automations the current spec accepts."""
    document = _doc(result)
    kept = [
        item
        for item in document["automations"]
        if _supported(item["trigger"])
        and all(
            action["type"] in ACTION_TYPES
            for action in item["actions"] + item.get("actions_on_resolve", [])
        )
    ]
    path = tmp_path / "imported.yaml"
    path.write_text(
        yaml.safe_dump({"channels": document.get("channels", {}), "automations": kept}),
        encoding="utf-8",
    )
    # Every ${VAR} the import wrote (channel and call-webhook URLs) gets a harmless URL.
    env = {
        name: "json://127.0.0.1:9/notify"
        for name in re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text(encoding="utf-8"))
    }
    return [item["name"] for item in kept], load_config([path], env)


def test_recorded_rest_automation_request_and_response_convert_alike() -> None:
    """The recorded POST /automations body and its response import to the same YAML."""
    recorded = json.loads(REST.read_text(encoding="utf-8"))
    sent = convert(json.dumps(recorded["request"]["json"]), source="request.json")
    stored = convert(json.dumps(recorded["response"]["json"]), source="request.json")
    assert sent == stored


def test_recorded_rest_automation_maps_names_labels_and_actions() -> None:
    """The recorded automation keeps its trigger with prefect. dropped and maps both actions."""
    recorded = json.loads(REST.read_text(encoding="utf-8"))
    result = convert(json.dumps(recorded["response"]["json"]), source="16.json")
    [automation] = _doc(result)["automations"]
    assert automation["name"] == "lab: failing flow -> run ok deployment + webhook"
    assert automation["description"] == "created by rest_actions.py"
    assert "enabled" not in automation
    assert automation["trigger"] == {
        "type": "event",
        "posture": "Reactive",
        "expect": ["flow-run.Failed"],
        "match": {"resource.id": "flow-run.*"},
        "match_related": {
            "resource.role": "flow",
            "resource.id": "flow.52fc8bac-bfa9-43dc-ae9d-4299aff2ae0f",
        },
        "for_each": ["resource.id"],
        "threshold": 1,
    }
    run, webhook = automation["actions"]
    assert run == {
        "type": "run-deployment",
        "deployment_id": "1efb2492-c02e-4438-8cf7-50628406c4a4",
        "parameters": {"n": 42},
    }
    assert webhook["type"] == "call-webhook"
    assert webhook["url"] == "${PREFECT_BLOCK_128E0A71_URL}"
    assert "{{ flow_run.name }}" in webhook["payload"]
    assert any("PREFECT_BLOCK_128E0A71_URL" in w for w in result.warnings)
    assert any("actions[1].payload" in w and "flow, flow_run" in w for w in result.warnings)


def test_docs_style_automations_map_every_field() -> None:
    """A docs-style `automations:` file keeps descriptions, enabled, resolve and trigger actions."""
    result = convert(
        (PREFECT / "docs_automations.yaml").read_text(encoding="utf-8"), source="docs.yaml"
    )
    document = _doc(result)
    automations = _by_name(result)
    assert list(automations) == [
        "Cancel Long Running Flows",
        "Notify on production failures",
        "Detect zombie flows",
        "Retry storms",
        "Warehouse loaded after extract",
        "Both upstreams ready",
    ]
    assert document["channels"] == {
        "prefect-block-5b2a1c0e": {"url": "${PREFECT_BLOCK_5B2A1C0E_URL}"},
        "prefect-block-9c41d7e2": {"url": "${PREFECT_BLOCK_9C41D7E2_URL}"},
    }
    notify = automations["Notify on production failures"]
    assert (
        notify["actions"][0]["subject"] == "Flow run {{ event.resource['resource.name'] }} failed"
    )
    assert "event.resource['state-message']" in notify["actions"][0]["body"]
    assert notify["actions_on_resolve"] == [
        {
            "type": "notify",
            "channel": "prefect-block-5b2a1c0e",
            "subject": "Prefect automated notification",
            "body": "{{ event.resource['resource.name'] }} recovered",
        }
    ]
    storms = automations["Retry storms"]
    assert storms["enabled"] is False
    assert storms["trigger"]["within"] == "10m"
    assert storms["trigger"]["for_each"] == ["related:deployment:resource.id"]
    assert storms["trigger"]["match_related"][0] == {
        "resource.role": "deployment",
        "resource.id": "deployment.*",
    }
    # pause-work-pool is left out; the actions_on_trigger notification remains.
    assert [a["type"] for a in storms["actions"]] == ["notify"]
    assert "Retry storms: actions[0] (pause-work-pool): no runbell equivalent; left out" in (
        result.warnings
    )
    zombie = automations["Detect zombie flows"]
    assert zombie["trigger"]["after"] == ["flow-run.heartbeat"]
    assert zombie["actions"] == [
        {
            "type": "change-run-state",
            "state": "CRASHED",
            "message": "Flow run marked as crashed due to missing heartbeats.",
        }
    ]
    assert automations["Cancel Long Running Flows"]["actions"] == [{"type": "cancel-run"}]


def test_docs_style_composite_triggers_are_emitted_in_runbell_shape() -> None:
    """Compound and sequence triggers keep require/within/triggers, children mapped."""
    result = convert((PREFECT / "docs_automations.yaml").read_text(encoding="utf-8"))
    automations = _by_name(result)
    sequence = automations["Warehouse loaded after extract"]["trigger"]
    assert sequence["type"] == "sequence"
    assert sequence["within"] == "1h"
    assert [t["expect"] for t in sequence["triggers"]] == [
        ["warehouse.extract.finished"],
        ["warehouse.load"],
    ]
    compound = automations["Both upstreams ready"]["trigger"]
    assert (compound["type"], compound["require"], compound["within"]) == ("compound", "all", "30m")
    assert compound["triggers"][1]["match_related"] == {
        "resource.role": "deployment",
        "resource.name": "ingest-customers",
    }
    run = automations["Both upstreams ready"]["actions"][0]
    assert run["parameters"]["upstream"] == "{{ event.resource['resource.name'] }}"


def test_docs_style_output_loads_with_runbell_loader(tmp_path: Path) -> None:
    """Every automation the current spec supports loads with load_config, channels included."""
    result = convert((PREFECT / "docs_automations.yaml").read_text(encoding="utf-8"))
    names, config = _load_supported(result, tmp_path)
    assert "Notify on production failures" in names
    assert "Retry storms" in names
    loaded = {automation.name: automation for automation in config.automations}
    assert set(loaded) == set(names)
    assert loaded["Retry storms"].enabled is False
    storms = loaded["Retry storms"].trigger
    assert isinstance(storms, EventTrigger)
    assert storms.threshold == 3
    assert set(config.channels) == {"prefect-block-5b2a1c0e", "prefect-block-9c41d7e2"}


def test_prefect_yaml_deployment_triggers_become_run_deployment_automations() -> None:
    """Each deployment trigger becomes an automation named after deployment and trigger."""
    result = convert((PREFECT / "prefect.yaml").read_text(encoding="utf-8"), source="prefect.yaml")
    automations = _by_name(result)
    assert list(automations) == [
        "my-deployment__automation_1",
        "my-deployment / pinged-and-replied",
        "campaign-execution / on-proposal",
    ]
    first = automations["my-deployment__automation_1"]
    assert first["trigger"]["match"] == {"resource.id": "my.external.resource"}
    assert "match_related" not in first["trigger"]  # Prefect does not narrow it either
    assert first["actions"] == [
        {
            "type": "run-deployment",
            "deployment": "my-deployment",
            "parameters": {"param_1": "{{ event }}"},
        }
    ]
    compound = automations["my-deployment / pinged-and-replied"]
    assert compound["trigger"]["type"] == "compound"
    assert compound["actions"][0]["parameters"] == {
        "param_1": "{{ event.resource['resource.id'] }}"
    }
    campaign = automations["campaign-execution / on-proposal"]
    assert campaign["enabled"] is False
    assert campaign["description"].startswith("Run two hours after")
    assert campaign["actions"][0]["schedule_after"] == "2h"
    assert campaign["actions"][0]["parameters"] == {
        "campaign_id": "{{ event.resource['resource.id'] }}"
    }
    assert sum("runs deployment" in w for w in result.warnings) == 3


def test_prefect_yaml_scoped_triggers_match_the_deployment_by_name() -> None:
    """With scope_deployment_triggers, match_related names the owning deployment, with a warning."""
    result = convert(
        (PREFECT / "prefect.yaml").read_text(encoding="utf-8"), scope_deployment_triggers=True
    )
    first = _by_name(result)["my-deployment__automation_1"]
    assert first["trigger"]["match_related"] == {
        "resource.role": "deployment",
        "resource.name": "my-deployment",
    }
    assert any(
        w.startswith("my-deployment__automation_1: trigger.match_related: narrowed")
        for w in result.warnings
    )


def test_prefect_yaml_without_triggers_imports_nothing_and_says_so() -> None:
    """A prefect.yaml without any triggers gives an empty list and one warning."""
    result = convert("deployments:\n  - name: nightly\n    entrypoint: f.py:f\n", source="p.yaml")
    assert _doc(result)["automations"] == []
    assert result.warnings == ["p.yaml: no deployment has 'triggers:'; nothing imported"]


def test_action_map_covers_every_prefect_action_type() -> None:
    """ACTION_MAP names every Prefect action type and nothing else."""
    assert ACTION_MAP == EXPECTED_ACTIONS
    assert set(PREFECT_ACTIONS) == set(ACTION_MAP)


@pytest.mark.parametrize("prefect_type", sorted(PREFECT_ACTIONS))
def test_every_prefect_action_is_mapped_or_warned(prefect_type: str) -> None:
    """Each Prefect action type becomes its runbell action, or a warning naming it."""
    action = {"type": prefect_type, **PREFECT_ACTIONS[prefect_type]}
    result = convert(_automation({"type": "event", "expect": ["x.y"]}, [action]))
    [automation] = _doc(result)["automations"]
    expected = EXPECTED_ACTIONS[prefect_type]
    if expected is None:
        assert automation["actions"] == [{"type": "do-nothing"}]
        assert f"a: actions[0] ({prefect_type}): no runbell equivalent; left out" in result.warnings
        assert "a: actions: no action runbell can run; 'do-nothing' added" in result.warnings[-1]
    else:
        assert automation["actions"][0]["type"] == expected


def test_unknown_action_type_is_warned_not_dropped_silently() -> None:
    """A Prefect Cloud action this import does not know is reported."""
    result = convert(_automation({"expect": ["x.y"]}, [{"type": "start-fire-drill"}]))
    assert "a: actions[0] (start-fire-drill): unknown Prefect action type; left out" in (
        result.warnings
    )


def test_pause_and_resume_automation_resolve_ids_to_names() -> None:
    """inspect --json ids in pause/resume-automation become runbell automation names."""
    result = convert((PREFECT / "inspect_list.json").read_text(encoding="utf-8"))
    automations = _by_name(result)
    assert automations["pause the hourly patrol"]["actions"] == [
        {"type": "pause-automation", "automation": "guard recovered"}
    ]
    assert automations["guard recovered"]["actions"] == [
        {"type": "resume-automation", "automation": "pause the hourly patrol"}
    ]
    assert (
        "pause the hourly patrol: tags: runbell automations have no tags; dropped ['garden']"
        in (result.warnings)
    )


def test_unknown_automation_id_is_kept_and_warned() -> None:
    """An automation id not in the file stays as automation_id with a warning."""
    action = {"type": "pause-automation", "source": "selected", "automation_id": "abc"}
    result = convert(_automation({"expect": ["x.y"]}, [action]))
    assert _doc(result)["automations"][0]["actions"] == [
        {"type": "pause-automation", "automation_id": "abc"}
    ]
    assert any("automation abc is not in this file" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("template", "expected", "warning"),
    [
        (
            "{{ event.resource['prefect.resource.name'] }}",
            "{{ event.resource['resource.name'] }}",
            None,
        ),
        ('{{ event.resource["prefect.state-name"] }}', '{{ event.resource["state-name"] }}', None),
        ("{{ event.resource.id }}", "{{ event.resource['resource.id'] }}", None),
        ("prefect.flow-run {{ event.event }}", "prefect.flow-run {{ event.event }}", None),
        ("{{ flow_run.name }}", "{{ flow_run.name }}", "template uses flow_run"),
        ("{{ deployment.name }} {{ flow.name }}", None, "template uses deployment, flow"),
        ("{{ event.resource_in_role['flow'] }}", None, "event.resource_in_role"),
        ("{% for r in event.related %}{{ r['prefect.resource.id'] }}{% endfor %}", None, None),
        ("{{ automation.id }}", None, "automation.id"),
        ("{{ event.id", None, "template does not parse"),
    ],
)
def test_templates_are_rewritten_and_unknown_objects_warned(
    template: str, expected: str | None, warning: str | None
) -> None:
    """Templates lose prefect. label keys; objects runbell may not provide are warned."""
    action = {"type": "send-notification", "block_document_id": "b" * 8, "body": template}
    result = convert(_automation({"expect": ["x.y"]}, [action]))
    body = _doc(result)["automations"][0]["actions"][0]["body"]
    if expected is not None:
        assert body == expected
    assert "prefect.resource" not in body
    template_warnings = [w for w in result.warnings if "actions[0].body" in w]
    if warning is None:
        assert template_warnings == []
    else:
        assert any(warning in w for w in template_warnings), template_warnings


@pytest.mark.parametrize(
    ("expect", "warning"),
    [
        (["prefect.flow-run.Failed*"], "now also matches 'flow-run.Failed'"),
        (["prefect.flow-run.*"], None),
        (["prefect.flow-run.Failed"], None),
        (["!prefect.flow-run.Failed"], None),
        (["prefect.flow-run"], "Prefect matched event names by prefix"),
        (["prefect.automation.action"], "e.g. 'automation.action.executed'"),
        (["etl.load", "etl.load.done"], "'etl.load': Prefect matched event names by prefix"),
        (["flow-run.Fail?d"], "now also matches 'flow-run.Failed', which Prefect's"),
    ],
)
def test_event_name_glob_and_prefix_differences_are_warned(
    expect: list[str], warning: str | None
) -> None:
    """Runbell's `*` matches the empty string and names match whole; Prefect differs."""
    result = convert(_automation({"type": "event", "expect": expect}))
    pattern_warnings = [w for w in result.warnings if "trigger.expect" in w]
    if warning is None:
        assert pattern_warnings == []
    else:
        assert any(warning in w for w in pattern_warnings), pattern_warnings


def test_prefix_warning_uses_event_names_from_other_automations() -> None:
    """An event name another automation expects counts as a real name for the prefix check."""
    text = json.dumps(
        [
            {"name": "one", "trigger": {"expect": ["etl.load"]}, "actions": []},
            {"name": "two", "trigger": {"expect": ["etl.load.done"]}, "actions": []},
        ]
    )
    result = convert(text)
    assert any(w.startswith("one: trigger.expect: 'etl.load'") for w in result.warnings)
    assert not any(w.startswith("two: trigger.expect") for w in result.warnings)


@pytest.mark.parametrize(
    ("glob", "warned"),
    [("prefect.flow-run.*", False), ("prefect.flow-run.a*b", True), ("run-?", True), ("x", False)],
)
def test_label_globs_prefect_compares_literally_are_warned(glob: str, warned: bool) -> None:
    """A label glob with `*` before the end or `?` was literal in Prefect."""
    result = convert(_automation({"expect": ["x.y"], "match": {"prefect.resource.id": glob}}))
    assert any("compares this literally" in w for w in result.warnings) is warned


def test_proactive_warnings_name_heartbeat_and_missing_after() -> None:
    """Zombie (heartbeat) triggers and "no completion within N" triggers are warned."""
    result = convert((PREFECT / "docs_automations.yaml").read_text(encoding="utf-8"))
    assert (
        "Cancel Long Running Flows: trigger: Proactive without 'after': runbell alarms 5m "
        "after the last expected event; Prefect may alarm up to two windows later"
    ) in result.warnings
    assert any(
        w.startswith("Detect zombie flows: trigger: Proactive heartbeat") and "#21932" in w
        for w in result.warnings
    )


@pytest.mark.parametrize(
    ("within", "expected"),
    [
        (0, None),
        (90, "90s"),
        (600.0, "10m"),
        (93600, "26h"),
        (86400, "1d"),
        (2.5, 2.5),
        ("PT10M", "10m"),
        ("P1DT2H", "26h"),
        ("1:30:00", "90m"),
        ("45m", "45m"),
    ],
)
def test_within_durations_become_runbell_durations(within: Any, expected: Any) -> None:
    """Seconds, ISO 8601 and clock durations become 90s / 10m / 26h / 1d."""
    result = convert(_automation({"expect": ["x.y"], "within": within}))
    assert _doc(result)["automations"][0]["trigger"].get("within") == expected


def test_proactive_without_within_gets_prefects_ten_seconds() -> None:
    """A Proactive trigger with within 0 gets Prefect's 10 s default."""
    result = convert(_automation({"expect": ["x.y"], "posture": "Proactive"}))
    assert _doc(result)["automations"][0]["trigger"]["within"] == "10s"


@pytest.mark.parametrize(
    ("trigger", "kind"),
    [
        ({"expect": ["x.y"]}, "event"),
        ({"require": "any", "triggers": [{"expect": ["x.y"]}]}, "compound"),
        ({"triggers": [{"expect": ["x.y"]}]}, "sequence"),
        (
            {"posture": "Metric", "metric": {"name": "duration", "operator": ">", "threshold": 60}},
            "metric",
        ),
    ],
)
def test_trigger_type_defaults_follow_prefects_discriminator(
    trigger: dict[str, Any], kind: str
) -> None:
    """Without `type`, Prefect's trigger_discriminator decides the kind."""
    result = convert(_automation(trigger))
    assert _doc(result)["automations"][0]["trigger"]["type"] == kind


def test_metric_trigger_keeps_its_query() -> None:
    """A metric trigger keeps name, operator, threshold, range and firing_for."""
    trigger = {
        "type": "metric",
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": {"prefect.resource.role": "deployment", "prefect.resource.name": "etl"},
        "metric": {"name": "successes", "operator": "<", "threshold": 0.9, "range": 3600},
    }
    result = convert(_automation(trigger))
    assert _doc(result)["automations"][0]["trigger"] == {
        "type": "metric",
        "match": {"resource.id": "flow-run.*"},
        "match_related": {"resource.role": "deployment", "resource.name": "etl"},
        "metric": {
            "name": "successes",
            "operator": "<",
            "threshold": 0.9,
            "range": "1h",
            "firing_for": "5m",
        },
    }
    assert any("metric trigger (Prefect Cloud only)" in w for w in result.warnings)


@pytest.mark.parametrize(
    "text",
    [
        "name: a\ntrigger: {expect: [x.y]}\nactions: [{type: do-nothing}]\n",
        '{"name": "a", "trigger": {"expect": ["x.y"]}, "actions": [{"type": "do-nothing"}]}',
        '[{"name": "a", "trigger": {"expect": ["x.y"]}, "actions": [{"type": "do-nothing"}]}]',
        "automations:\n  - name: a\n    trigger: {expect: [x.y]}\n"
        "    actions: [{type: do-nothing}]\n",
    ],
)
def test_every_input_shape_gives_the_same_automation(text: str) -> None:
    """One automation, a list, `automations:`, YAML or JSON: the same output."""
    assert _doc(convert(text))["automations"] == [
        {
            "name": "a",
            "trigger": {"type": "event", "posture": "Reactive", "expect": ["x.y"], "threshold": 1},
            "actions": [{"type": "do-nothing"}],
        }
    ]


def test_output_is_deterministic_whatever_the_input_key_order() -> None:
    """Permuted keys in the input give byte-identical YAML."""
    trigger = {
        "within": 60,
        "threshold": 2,
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "expect": ["prefect.flow-run.Failed"],
        "type": "event",
    }
    reordered = dict(reversed(list(trigger.items())))
    action = {"body": "b", "block_document_id": "5b2a1c0e-7f3d", "type": "send-notification"}
    first = convert(_automation(trigger, [action]))
    second = convert(_automation(reordered, [dict(reversed(list(action.items())))]))
    assert first == second
    assert first == convert(_automation(trigger, [action]))


def test_duplicate_names_are_renamed_with_a_warning() -> None:
    """Prefect allows duplicate names; runbell's must be unique."""
    one = {"name": "dup", "trigger": {"expect": ["x.y"]}, "actions": []}
    result = convert(json.dumps([one, one]))
    assert [a["name"] for a in _doc(result)["automations"]] == ["dup", "dup (2)"]
    assert any(
        w.startswith("dup: name: used more than once; renamed to 'dup (2)'")
        for w in result.warnings
    )


def test_threshold_zero_is_raised_to_one_with_a_warning() -> None:
    """Runbell needs threshold >= 1; Prefect's 0 is reported."""
    result = convert(_automation({"expect": ["x.y"], "threshold": 0}))
    assert _doc(result)["automations"][0]["trigger"]["threshold"] == 1
    assert any("trigger.threshold: 0 fires on every matching event" in w for w in result.warnings)


def test_unknown_trigger_and_automation_fields_are_reported() -> None:
    """Fields Prefect ignores are dropped with a warning, not silently."""
    text = json.dumps(
        {
            "name": "a",
            "trigger": {"expect": ["x.y"], "cooldown": 5},
            "actions": [],
            "priority": 3,
        }
    )
    warnings = convert(text).warnings
    assert "a: priority: not a Prefect automation field; dropped" in warnings
    assert "a: trigger.cooldown: not an event trigger field; dropped" in warnings


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("name: [unclosed\n", "", "invalid YAML or JSON"),
        ('[{"name": "a",}]', "", "invalid JSON"),
        ("42\n", "", "expected a Prefect automation"),
        ("automations: {a: 1}\n", "automations", "must be a list"),
        ("automations:\n  - name: a\n", "automations[0].trigger", "has no trigger"),
        ("automations:\n  - trigger: {}\n", "automations[0].name", "required"),
        (
            "automations:\n  - {name: a, trigger: {type: weird}, actions: []}\n",
            "automations[0].trigger.type",
            "unknown trigger type 'weird'",
        ),
        (
            "automations:\n  - {name: a, trigger: {within: soon}, actions: []}\n",
            "automations[0].trigger.within",
            "not a duration",
        ),
        (
            "automations:\n  - {name: a, trigger: {match: [a]}, actions: []}\n",
            "automations[0].trigger.match",
            "must be a mapping",
        ),
        (
            "automations:\n  - {name: a, trigger: {}, actions: [{block_document_id: x}]}\n",
            "automations[0].actions[0].type",
            "required",
        ),
        (
            "automations:\n  - {name: a, trigger: {}, actions: [{type: run-deployment}]}\n",
            "automations[0].actions[0].deployment_id",
            "required when source is selected",
        ),
        (
            "automations:\n  - {name: a, trigger: {require: 3, triggers: [{}]}, actions: []}\n",
            "automations[0].trigger.require",
            "from 1 to 1",
        ),
        ("deployments:\n  - triggers: [{}]\n", "deployments[0].name", "needs a name"),
        (
            "deployments:\n  - {name: d, triggers: [{threshold: many}]}\n",
            "deployments[0].triggers[0].threshold",
            "whole number",
        ),
        (
            "automations:\n  - {name: a, trigger: {match: "
            "{prefect.resource.id: a, resource.id: b}}, actions: []}\n",
            "automations[0].trigger.match.resource.id",
            "collide",
        ),
    ],
)
def test_malformed_input_raises_a_value_error_naming_the_path(
    text: str, path: str, fragment: str
) -> None:
    """Bad input raises PrefectImportError (a ValueError) with source, path and reason."""
    with pytest.raises(ValueError, match=r"^in\.yaml") as caught:
        convert(text, source="in.yaml")
    error = caught.value
    assert isinstance(error, PrefectImportError)
    assert error.path == path
    assert fragment in str(error)
    if path:
        assert f": {path}: " in str(error)


def test_yaml_syntax_error_reports_the_line() -> None:
    """A YAML syntax error names the source and the line."""
    with pytest.raises(PrefectImportError) as caught:
        convert("automations:\n  - name: a\n    trigger: {expect: [x\n", source="bad.yaml")
    assert caught.value.line is not None
    assert str(caught.value).startswith(f"bad.yaml:{caught.value.line}: invalid YAML")
