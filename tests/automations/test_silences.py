"""Silences: label matchers with globs and negation; one-off, weekly and cron schedules."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from automations.core.silences import SilenceSet, firing_labels, is_silenced
from automations.errors import ConfigError
from automations.spec import Silence
from automations.spec.loader import load_config
from events.model import Event

LABELS = {"automation": "nightly-etl", "related:deployment:resource.name": "prod-load"}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _silence(**schedule: Any) -> Silence:
    body = {"name": "s", "matchers": {"automation": "nightly-*"}, **schedule}
    return Silence.model_validate(body)


ONE_OFF = {"starts": "2025-06-01T22:00:00+02:00", "ends": "2025-06-02T02:00:00+02:00"}
NIGHTS = {
    "weekly": [{"days": ["fri"], "start": "22:00", "end": "06:00", "timezone": "Europe/Paris"}]
}
# The night of 29-30 March 2025 loses an hour in Paris; 25-26 October gains one.
SATURDAY_NIGHTS = {
    "weekly": [{"days": ["sat"], "start": "22:00", "end": "06:00", "timezone": "Europe/Paris"}]
}
BACKUP = {"cron": "0 2 * * *", "duration": "2h"}

SCHEDULES: list[tuple[str, dict[str, Any], str, bool]] = [
    ("one-off: inside the window", ONE_OFF, "2025-06-01T23:30:00+02:00", True),
    ("one-off: starts is inclusive", ONE_OFF, "2025-06-01T20:00:00+00:00", True),
    ("one-off: ends is exclusive", ONE_OFF, "2025-06-02T00:00:00+00:00", False),
    ("one-off: before it starts", ONE_OFF, "2025-06-01T21:59:59+02:00", False),
    ("weekly: Friday 23:00 Paris", NIGHTS, "2025-06-06T23:00:00+02:00", True),
    ("weekly: crosses midnight into Saturday", NIGHTS, "2025-06-07T05:59:00+02:00", True),
    ("weekly: ends at 06:00 Saturday", NIGHTS, "2025-06-07T06:00:00+02:00", False),
    ("weekly: Friday before 22:00", NIGHTS, "2025-06-06T21:59:00+02:00", False),
    ("weekly: Saturday night is not Friday", NIGHTS, "2025-06-07T23:00:00+02:00", False),
    ("weekly: judged in the window's zone", NIGHTS, "2025-06-06T20:30:00+00:00", True),
    ("DST spring: 05:30 CEST still muted", SATURDAY_NIGHTS, "2025-03-30T03:30:00+00:00", True),
    ("DST spring: ends 06:00 CEST, 04:00 UTC", SATURDAY_NIGHTS, "2025-03-30T04:00:00+00:00", False),
    ("DST spring: starts 22:00 CET, 21:00 UTC", SATURDAY_NIGHTS, "2025-03-29T21:00:00+00:00", True),
    ("DST autumn: 05:30 CET still muted", SATURDAY_NIGHTS, "2025-10-26T04:30:00+00:00", True),
    ("DST autumn: ends 06:00 CET, 05:00 UTC", SATURDAY_NIGHTS, "2025-10-26T05:00:00+00:00", False),
    ("cron: at the start", BACKUP, "2025-06-03T02:00:00+00:00", True),
    ("cron: inside the duration", BACKUP, "2025-06-03T03:59:59+00:00", True),
    ("cron: duration is exclusive", BACKUP, "2025-06-03T04:00:00+00:00", False),
    ("cron: before the start", BACKUP, "2025-06-03T01:59:00+00:00", False),
    (
        "cron: weekdays at 22:00 for 10h reaches Saturday morning",
        {"cron": "0 22 * * mon-fri", "duration": "10h"},
        "2025-06-07T07:30:00+00:00",
        True,
    ),
    (
        "cron: no Saturday start, so Sunday morning is not muted",
        {"cron": "0 22 * * mon-fri", "duration": "10h"},
        "2025-06-08T07:30:00+00:00",
        False,
    ),
    ("cron: */15 step", {"cron": "*/15 * * * *", "duration": "5m"}, "2025-06-03T10:34:00Z", True),
    ("cron: */15 gap", {"cron": "*/15 * * * *", "duration": "5m"}, "2025-06-03T10:36:00Z", False),
    (
        "cron: list of days of month and months by name",
        {"cron": "0 0 1,15 jan,jun *", "duration": "1d"},
        "2025-06-15T12:00:00Z",
        True,
    ),
    (
        "cron: both day fields restricted means either (Vixie)",
        {"cron": "0 0 13 * fri", "duration": "1h"},
        "2025-06-06T00:30:00Z",
        True,
    ),
    (
        "cron in a zone: 02:30 Paris does not exist on 30 March",
        {"cron": "30 2 * * *", "duration": "1h", "timezone": "Europe/Paris"},
        "2025-03-30T01:45:00+00:00",
        False,
    ),
    (
        "cron in a zone: 02:30 Paris the day before is 01:30 UTC",
        {"cron": "30 2 * * *", "duration": "1h", "timezone": "Europe/Paris"},
        "2025-03-29T01:45:00+00:00",
        True,
    ),
    (
        "cron in a zone: 02:30 Paris happens twice on 26 October, first at 00:30 UTC",
        {"cron": "30 2 * * *", "duration": "10m", "timezone": "Europe/Paris"},
        "2025-10-26T00:35:00+00:00",
        True,
    ),
    (
        "cron in a zone: and again at 01:30 UTC",
        {"cron": "30 2 * * *", "duration": "10m", "timezone": "Europe/Paris"},
        "2025-10-26T01:35:00+00:00",
        True,
    ),
    (
        "cron in a zone: not between the two",
        {"cron": "30 2 * * *", "duration": "10m", "timezone": "Europe/Paris"},
        "2025-10-26T01:00:00+00:00",
        False,
    ),
    (
        "cron in a zone: 7-day duration spanning the autumn change",
        {"cron": "0 12 * * sun", "duration": "7d", "timezone": "Europe/Paris"},
        "2025-11-02T10:59:00+00:00",
        True,
    ),
    (
        "cron: day of week 7 is Sunday",
        {"cron": "0 0 * * 7", "duration": "1h"},
        "2025-06-01T00:30:00Z",
        True,
    ),
    (
        "cron: day of week 0 is Sunday",
        {"cron": "0 0 * * 0", "duration": "1h"},
        "2025-06-01T00:30:00Z",
        True,
    ),
    (
        "cron: Sunday is not Monday",
        {"cron": "0 0 * * sun", "duration": "1h"},
        "2025-06-02T00:30:00Z",
        False,
    ),
    (
        "recurring bounded by ends: not after it",
        {**BACKUP, "ends": "2025-06-01T00:00:00Z"},
        "2025-06-03T02:30:00Z",
        False,
    ),
]


@pytest.mark.parametrize(
    ("schedule", "at", "silenced"),
    [case[1:] for case in SCHEDULES],
    ids=[case[0] for case in SCHEDULES],
)
def test_schedules(schedule: dict[str, Any], at: str, silenced: bool) -> None:
    """Each schedule is active exactly where the row says, at that instant."""
    silence = _silence(**schedule)
    assert (is_silenced([silence], LABELS, _at(at)) is silence) is silenced


MATCHERS: list[tuple[str, dict[str, Any], dict[str, str], bool]] = [
    ("glob on the automation name", {"automation": "nightly-*"}, LABELS, True),
    ("no match", {"automation": "daily-*"}, LABELS, False),
    (
        "negation excludes matching values",
        {"automation": "*", "related:deployment:resource.name": "!prod-*"},
        LABELS,
        False,
    ),
    (
        "negation admits other values",
        {"automation": "*", "related:deployment:resource.name": "!test-*"},
        LABELS,
        True,
    ),
    ("a missing label never matches, even negated", {"team": "!data"}, LABELS, False),
    ("a list is any-of", {"automation": ["daily-*", "nightly-*"]}, LABELS, True),
    ("every key must match", {"automation": "nightly-*", "tag": "x"}, LABELS, False),
]


@pytest.mark.parametrize(
    ("matchers", "labels", "silenced"),
    [case[1:] for case in MATCHERS],
    ids=[case[0] for case in MATCHERS],
)
def test_matchers(matchers: dict[str, Any], labels: dict[str, str], silenced: bool) -> None:
    """Matchers follow the trigger label rules: globs, lists, ! negation, missing never."""
    silence = Silence.model_validate({"name": "s", "matchers": matchers, **ONE_OFF})
    assert (
        is_silenced([silence], labels, _at("2025-06-01T23:00:00+02:00")) is not None
    ) is silenced


def test_first_matching_silence_wins() -> None:
    """Of several active silences the first in file order is returned; none when none match."""
    first = Silence.model_validate({"name": "a", "matchers": {"automation": "other"}, **ONE_OFF})
    second = Silence.model_validate({"name": "b", "matchers": {"automation": "*"}, **ONE_OFF})
    third = Silence.model_validate({"name": "c", "matchers": {"automation": "*"}, **ONE_OFF})
    silences = SilenceSet([first, second, third])
    assert silences.match(LABELS, _at("2025-06-01T23:00:00+02:00")) is second
    assert silences.match(LABELS, _at("2025-06-03T00:00:00+00:00")) is None
    assert not SilenceSet([])


def test_firing_labels_combine_event_related_bucket_and_name() -> None:
    """A firing's labels hold the resource, the first related per role, the bucket and the name."""
    event = Event.model_validate(
        {
            "id": "00000000-0000-0000-0000-000000000001",
            "occurred": "2025-06-01T00:00:00Z",
            "event": "flow-run.Failed",
            "resource": {"resource.id": "flow-run.1", "automation": "spoofed"},
            "related": [
                {
                    "resource.id": "deployment.a",
                    "resource.role": "deployment",
                    "resource.name": "a",
                },
                {
                    "resource.id": "deployment.b",
                    "resource.role": "deployment",
                    "resource.name": "b",
                },
            ],
        }
    )
    labels = firing_labels("etl", {"related:deployment:resource.id": "deployment.a"}, event)
    assert labels["automation"] == "etl"
    assert labels["resource.id"] == "flow-run.1"
    assert labels["related:deployment:resource.name"] == "a"
    assert labels["related:deployment:resource.role"] == "deployment"
    assert firing_labels("etl", {}, None) == {"automation": "etl"}


@pytest.mark.parametrize(
    ("expression", "phrase"),
    [
        ("0 2 * *", "5 fields"),
        ("0 0 2 * * *", "5 fields"),  # cronsim's 6-field (seconds) form is not ours
        ("60 * * * *", "minute '60'"),
        ("*/0 * * * *", "minute '*/0'"),
        ("5-1 * * * *", "minute '5-1'"),
        ("x * * * *", "minute 'x'"),
        ("0 24 * * *", "hour '24'"),
        ("0 0 32 * *", "day-of-month '32'"),
        ("0 0 * 13 *", "month '13'"),
        ("0 0 * * 8", "day-of-week '8'"),
        ("0 0 31 feb *", "never matches"),
    ],
)
def test_bad_cron_expressions_name_the_field(expression: str, phrase: str) -> None:
    """A malformed cron is refused at load, naming the field and what it takes."""
    with pytest.raises(ValidationError, match=re.escape(phrase)):
        _silence(cron=expression, duration="1h")


SILENCE_MISTAKES = [
    ("{name: a, matchers: {automation: x}, starts: '2025-06-01T00:00:00Z'}", "silences[0]", "ends"),
    (
        "{name: a, matchers: {automation: x}, cron: '0 2 * *', duration: 1h}",
        "silences[0].cron",
        "5 fields",
    ),
    ("{name: a, matchers: {automation: x}, cron: '0 2 * * *'}", "silences[0]", "go together"),
    (
        "{name: a, matchers: {a: x}, weekly: [{days: [fri], start: '25:00', end: '06:00'}]}",
        "silences[0].weekly[0].start",
        "HH:MM",
    ),
    (
        "{name: a, matchers: {a: x}, weekly: [{days: [fri], start: '22:00', end: '06:00', "
        "timezone: Mars/Olympus}]}",
        "silences[0].weekly[0].timezone",
        "unknown time zone",
    ),
    (
        "{name: a, matchers: {a: x}, weekly: [{days: [fry], start: '22:00', end: '06:00'}]}",
        "silences[0].weekly[0].days[0]",
        "one of",
    ),
    (
        "{name: a, matchers: {}, starts: '2025-06-01T00:00:00Z', ends: '2025-06-02T00:00:00Z'}",
        "silences[0].matchers",
        "must not be empty",
    ),
    (
        "{name: a, matcher: {a: x}, starts: '2025-06-01T00:00:00Z', ends: '2025-06-02T00:00:00Z'}",
        "silences[0].matcher",
        "did you mean 'matchers'",
    ),
    (
        "{name: a, matchers: {a: x}, starts: '2025-06-01T00:00:00', ends: '2025-06-02T00:00:00Z'}",
        "silences[0].starts",
        "UTC offset",
    ),
]


@pytest.mark.parametrize(("silence", "path", "phrase"), SILENCE_MISTAKES)
def test_bad_silence_yaml_is_reported_with_file_line_and_path(
    tmp_path: Path, silence: str, path: str, phrase: str
) -> None:
    """A wrong silence names the file, its line and key, and what to write instead."""
    file = tmp_path / "silences.yaml"
    file.write_text(f"automations: []\nsilences:\n  - {silence}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config([file], {})
    problem = next(p for p in caught.value.problems if p.path == path)
    assert (problem.file, problem.line) == (str(file), 3)
    assert phrase in problem.message


def test_silences_from_several_files_load_in_order(tmp_path: Path) -> None:
    """Top-level silences: lists from every file are merged into Config.silences."""
    one = tmp_path / "one.yaml"
    one.write_text(
        "silences:\n  - name: backups\n    matchers: {automation: '*'}\n"
        "    cron: '0 2 * * *'\n    duration: 2h\n",
        encoding="utf-8",
    )
    two = tmp_path / "two.yaml"
    two.write_text(
        "silences:\n  - name: nights\n    matchers: {automation: '*'}\n"
        "    weekly: [{days: [Friday], start: '22:00', end: '06:00'}]\n",
        encoding="utf-8",
    )
    config = load_config([one, two], {})
    assert [s.name for s in config.silences] == ["backups", "nights"]
    assert config.silences[1].weekly[0].days == ["fri"]
