"""The automation YAML loader: merging, ${VAR}, line-accurate errors, secrets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from automations.errors import AutomationsError, ConfigError, Problem
from automations.spec import Config, EventTrigger, NotifyAction
from automations.spec.loader import load_config

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "slack://T000/B000/very-secret-token"


def _problems(paths: list[Path], env: dict[str, str]) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(paths, env)
    return caught.value.problems


def _write(tmp_path: Path, text: str, name: str = "automations.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_from_the_issue_loads() -> None:
    """The issue's example file loads with the documented shape and defaults."""
    config = load_config([FIXTURES / "example.yaml"], {"SLACK_WEBHOOK_URL": SECRET})
    assert config.channels["data-team"].url == SECRET
    (automation,) = config.automations
    assert automation.name == "production-failures"
    assert automation.enabled is True
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == ["flow-run.Failed", "flow-run.Crashed"]
    assert trigger.match == {"resource.id": ["flow-run.*"]}
    assert trigger.match_related == [{"resource.role": ["tag"], "resource.id": ["tag.production"]}]
    assert (trigger.threshold, trigger.within, trigger.for_each) == (1, timedelta(0), [])
    action = automation.actions[0]
    assert isinstance(action, NotifyAction)
    assert action.channel == "data-team"


MISTAKES = [
    (8, "automations[0].trigger.posure", "did you mean 'posture'?"),
    (15, "automations[1].trigger.threshold", "whole number"),
    (22, "automations[2].trigger.posture", "'Reactive' or 'Proactive'"),
    (32, "automations[3].actions[0].subject", "MISSING_TOKEN is not set"),
    (38, "automations[4].actions[0].channel", "unknown channel 'data-teem'"),
    (45, "automations[5].actions[0].body", "template syntax error"),
    (46, "automations[6].name", "already used at"),
]


def test_every_mistake_in_a_file_is_reported_with_line_and_path() -> None:
    """Seven distinct mistakes come back together, each at its own line and key path."""
    problems = _problems([FIXTURES / "mistakes.yaml"], {"OPS_URL": "json://ops"})
    found = [(p.line, p.path) for p in problems]
    assert found == [(line, path) for line, path, _ in MISTAKES]
    for problem, (_, _, phrase) in zip(problems, MISTAKES, strict=True):
        assert problem.file.endswith("mistakes.yaml")
        assert phrase in problem.message


def test_problem_renders_file_line_path_message() -> None:
    """A problem prints as file:line: path: message, and the error lists them all."""
    problems = _problems([FIXTURES / "mistakes.yaml"], {"OPS_URL": "json://ops"})
    rendered = str(problems[2])
    assert rendered.endswith(
        "mistakes.yaml:22: automations[2].trigger.posture: "
        "must be one of 'Reactive' or 'Proactive'; write one of those exactly"
    )
    error = ConfigError(problems)
    assert isinstance(error, AutomationsError)
    assert str(error).count("\n") == len(problems)


def test_unknown_key_lists_the_allowed_keys() -> None:
    """An unknown key names itself and lists every allowed key."""
    problems = _problems([FIXTURES / "mistakes.yaml"], {"OPS_URL": "json://ops"})
    assert "allowed keys: type, match, match_related, after, expect" in problems[0].message


def test_secrets_never_appear_in_errors() -> None:
    """Resolved ${VAR} values are redacted from every message; missing ones are named."""
    path_env = {"OPS_URL": SECRET, "UNUSED": "x"}
    with pytest.raises(ConfigError) as caught:
        load_config([FIXTURES / "mistakes.yaml"], path_env)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value.problems)
    assert "MISSING_TOKEN" in str(caught.value)


def test_secret_quoted_by_a_message_is_redacted(tmp_path: Path) -> None:
    """A message that would quote a resolved value shows *** instead of the secret."""
    path = _write(
        tmp_path,
        "automations:\n"
        "  - name: a\n"
        "    trigger: {type: '${TOKEN}'}\n"
        "    actions: [{type: notify, channel: ops}]\n",
    )
    problems = _problems([path], {"TOKEN": "hunter2secret"})
    messages = [str(p) for p in problems]
    assert any("unknown type '***'" in m for m in messages)
    assert all("hunter2secret" not in m for m in messages)


def test_config_reports_and_redacts_its_secrets() -> None:
    """secrets() returns resolved values and channel URLs; repr never shows them."""
    config = load_config([FIXTURES / "example.yaml"], {"SLACK_WEBHOOK_URL": SECRET})
    assert SECRET in config.secrets()
    assert SECRET not in repr(config)
    assert config.redact(f"posting to {SECRET}") == "posting to ***"


def test_files_merge_channels_and_automations_across_files() -> None:
    """Automations in one file may notify channels defined in another."""
    config = load_config(
        [FIXTURES / "team_a.yaml", FIXTURES / "team_b.yaml"], {"ALERTS_URL": "json://a"}
    )
    assert set(config.channels) == {"alerts", "shared"}
    assert [a.name for a in config.automations] == ["staleness", "failures"]
    assert config.channels["shared"].url == "json://hooks.example/none"
    staleness = config.automations[0].trigger
    assert staleness.posture == "Proactive"
    assert staleness.after == ["flow-run.Running"]
    assert staleness.within == timedelta(hours=2)


def test_duplicates_across_files_name_both_places() -> None:
    """A channel or automation defined twice is an error pointing at both files."""
    problems = _problems(
        [FIXTURES / "team_a.yaml", FIXTURES / "team_b.yaml", FIXTURES / "duplicate.yaml"],
        {"ALERTS_URL": "json://a"},
    )
    assert [(Path(p.file).name, p.line, p.path) for p in problems] == [
        ("duplicate.yaml", 2, "channels.alerts"),
        ("duplicate.yaml", 5, "automations[0].name"),
    ]
    assert "team_a.yaml:2" in problems[0].message
    assert "team_b.yaml:5" in problems[1].message


def test_yaml_syntax_error_reports_its_line() -> None:
    """Invalid YAML is one problem at the line PyYAML stopped on."""
    (problem,) = _problems([FIXTURES / "broken_syntax.yaml"], {})
    assert problem.line == 7
    assert problem.message.startswith("invalid YAML")


def test_errors_from_several_files_are_all_reported(tmp_path: Path) -> None:
    """A syntax error in one file does not hide mistakes in another."""
    problems = _problems([FIXTURES / "broken_syntax.yaml", FIXTURES / "mistakes.yaml"], {})
    files = {Path(p.file).name for p in problems}
    assert files == {"broken_syntax.yaml", "mistakes.yaml"}


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    """An unreadable path is reported, not raised as OSError."""
    (problem,) = _problems([tmp_path / "nope.yaml"], {})
    assert problem.line is None
    assert "cannot read" in problem.message


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("x-${A}-${B}", {"A": "1", "B": "2"}, "x-1-2"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-}", {}, ""),
        ("$${A}", {"A": "1"}, "${A}"),
        ("no refs $ here", {}, "no refs $ here"),
    ],
)
def test_env_references_resolve(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    """${VAR}, ${VAR:-default} and $${escape} resolve in any string value."""
    path = _write(tmp_path, f"channels:\n  c:\n    url: 'json://h/{text}'\n")
    config = load_config([path], env)
    assert config.channels["c"].url == f"json://h/{expected}"


@pytest.mark.parametrize(
    ("within", "posture", "expected"),
    [
        ("90", "Reactive", timedelta(seconds=90)),
        ("'90s'", "Reactive", timedelta(seconds=90)),
        ("'30m'", "Reactive", timedelta(minutes=30)),
        ("'26h'", "Reactive", timedelta(hours=26)),
        ("'1d'", "Reactive", timedelta(days=1)),
        ("0", "Proactive", timedelta(seconds=10)),
        ("null", "Reactive", None),
        ("-1", "Reactive", None),
        ("'5s'", "Proactive", None),
        ("'soon'", "Reactive", None),
    ],
)
def test_within_durations(
    tmp_path: Path, within: str, posture: str, expected: timedelta | None
) -> None:
    """within takes seconds or 90s/30m/26h/1d; Proactive defaults to and requires >= 10s."""
    path = _write(
        tmp_path,
        "channels: {c: {url: json://x}}\n"
        "automations:\n"
        "  - name: a\n"
        f"    trigger: {{type: event, posture: {posture}, within: {within}}}\n"
        "    actions: [{type: notify, channel: c}]\n",
    )
    if expected is None:
        (problem,) = _problems([path], {})
        assert (problem.line, problem.path) == (4, "automations[0].trigger.within")
    else:
        trigger = load_config([path], {}).automations[0].trigger
        assert trigger.within == expected


def test_event_trigger_defaults_follow_prefect() -> None:
    """Defaults mirror Prefect's client EventTrigger (Reactive, threshold 1, within 0)."""
    trigger = EventTrigger.model_validate({"type": "event"})
    assert trigger.posture == "Reactive"
    assert (trigger.threshold, trigger.within) == (1, timedelta(0))
    assert (trigger.match, trigger.match_related, trigger.after, trigger.expect) == ({}, [], [], [])
    assert trigger.for_each == []


def test_structural_mistakes_have_clear_messages(tmp_path: Path) -> None:
    """Missing keys, empty actions, bad types and unknown top-level keys each explain the fix."""
    path = _write(
        tmp_path,
        "chanels: {}\n"
        "automations:\n"
        "  - trigger: {type: event, threshold: 0}\n"
        "    actions: []\n"
        "  - name: b\n"
        "    trigger: {type: gauge}\n"
        "    actions: [{channel: c}]\n",
    )
    problems = _problems([path], {})
    by_path = {p.path: (p.line, p.message) for p in problems}
    assert by_path["chanels"][0] == 1
    assert "did you mean 'channels'?" in by_path["chanels"][1]
    assert by_path["automations[0].name"] == (3, "required key 'name' is missing; add 'name: ...'")
    assert by_path["automations[0].trigger.threshold"][1] == "must be at least 1; write 1 or more"
    assert by_path["automations[0].actions"][0] == 4
    assert "unknown type 'gauge'" in by_path["automations[1].trigger"][1]
    assert by_path["automations[1].actions[0]"][1].startswith("'type' is missing")


def test_duplicate_yaml_keys_are_reported(tmp_path: Path) -> None:
    """A key repeated in one mapping is an error instead of a silent override."""
    path = _write(tmp_path, "channels:\n  c: {url: json://a}\n  c: {url: json://b}\n")
    (problem,) = _problems([path], {})
    assert (problem.line, problem.path) == (3, "channels.c")


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    """An empty file contributes nothing and is not an error."""
    assert load_config([_write(tmp_path, "")], {}) == Config()


def test_non_mapping_document_is_rejected(tmp_path: Path) -> None:
    """A top-level list is reported at line 1."""
    (problem,) = _problems([_write(tmp_path, "- a\n- b\n")], {})
    assert problem.line == 1
