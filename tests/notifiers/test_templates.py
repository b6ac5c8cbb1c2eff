"""Sandboxed message templates: rendering, filters, limits and error messages."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from notifiers import TemplateError, check_syntax, render, render_json
from notifiers.templates import humanize

EVENT: dict[str, Any] = {
    "id": "2f1c",
    "event": "flow-run.Failed",
    "resource": {"resource.id": "flow-run.8a1c", "resource.name": "nightly-etl"},
    "payload": {"attempts": 3, "tags": ["prod"]},
}


class _WithPrivate:
    _private = "hidden"


def test_renders_event_fields() -> None:
    """Attributes, label lookups and payload values render into text."""
    source = "{{ event.event }} {{ event.resource['resource.name'] }} x{{ event.payload.attempts }}"
    assert render(source, {"event": EVENT}) == "flow-run.Failed nightly-etl x3"


def test_missing_keys_of_existing_objects_render_empty() -> None:
    """A label or payload key the event lacks renders as an empty string."""
    source = "[{{ event.resource['team'] }}][{{ event.payload.missing.deeper }}]"
    assert render(source, {"event": EVENT}) == "[][]"


def test_unknown_top_level_name_is_an_error() -> None:
    """A typo in a top-level name raises instead of rendering empty."""
    with pytest.raises(TemplateError, match="'evnt' is undefined"):
        render("{{ evnt.id }}", {"event": EVENT})


def test_tojson_filter() -> None:
    """tojson renders JSON without HTML escaping."""
    assert render("{{ p | tojson }}", {"p": {"a": "<b>", "n": [1]}}) == '{"a": "<b>", "n": [1]}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (200, "3m 20s"),
        (timedelta(hours=26, minutes=5), "1d 2h"),
        (3605, "1h"),
        (45, "45s"),
        (0.25, "250ms"),
        (-90, "-1m 30s"),
        (None, ""),
    ],
)
def test_humanize(value: Any, text: str) -> None:
    """humanize shows a duration with its two most significant units."""
    assert humanize(value) == text
    assert render("{{ v | humanize }}", {"v": value}) == text


def test_ui_url_uses_base_from_context() -> None:
    """ui_url links a resource id under ui_base_url, or renders empty without one."""
    source = "{{ 'flow-run.8a1c' | ui_url }}"
    assert render(source, {"ui_base_url": "https://runbell.local/"}) == (
        "https://runbell.local/resources/flow-run.8a1c"
    )
    assert render(source, {}) == ""


@pytest.mark.parametrize(
    "source",
    ["{{ ''.__class__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ x._private }}"],
)
def test_sandbox_blocks_dunder_and_private_access(source: str) -> None:
    """Escapes through __class__ and private attributes are sandbox violations, not blanks."""
    with pytest.raises(TemplateError, match="sandbox violation"):
        render(source, {"x": _WithPrivate()})


def test_sandbox_forbids_mutating_context() -> None:
    """The immutable sandbox refuses to change lists and dicts of the context."""
    with pytest.raises(TemplateError, match="sandbox violation"):
        render("{{ event.payload.tags.append('x') }}", {"event": EVENT})


def test_range_is_capped() -> None:
    """range() above 1,000 items is refused."""
    assert render("{{ range(1000) | length }}", {}) == "1000"
    with pytest.raises(TemplateError, match="range"):
        render("{% for i in range(1001) %}{% endfor %}", {})


def test_string_multiplication_is_capped() -> None:
    """'*' cannot build a huge string in one step."""
    with pytest.raises(TemplateError, match="sandbox violation"):
        render("{{ 'a' * 10000000 }}", {})


def test_runaway_template_is_stopped_by_the_timeout() -> None:
    """Nested loops that would run for minutes are stopped within about the timeout."""
    source = (
        "{% for i in range(999) %}{% for j in range(999) %}{% for k in range(999) %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    started = time.monotonic()
    with pytest.raises(TemplateError, match="timed out"):
        render(source, {}, timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_runaway_loop_over_data_is_stopped_too() -> None:
    """The timeout also stops loops that do not use range()."""
    source = "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="timed out"):
        render(source, {"s": "x" * 1000}, timeout=0.5)


def test_syntax_error_names_the_line() -> None:
    """A syntax error reports its line, from render and from check_syntax."""
    source = "line one\n{{ event.id }\n"
    with pytest.raises(TemplateError) as info:
        render(source, {})
    assert info.value.line == 2
    assert str(info.value).startswith("line 2: syntax error")
    assert (check_syntax(source) or "").startswith("line 2: syntax error")
    assert check_syntax("{{ event.id }}") is None


def test_template_errors_are_wrapped() -> None:
    """An error raised while rendering becomes a TemplateError naming its cause."""
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ 1 / 0 }}", {})


# -- render_json: the one rule for JSON templates (actions and orchestrators) --------------


def test_render_json_keeps_types_of_single_expressions() -> None:
    """A string that is one expression keeps its JSON type; other strings render as text."""
    context = {"parameters": {"n": 3, "ok": True, "tags": ["a"], "cfg": {"k": 1.5}}, "run_id": "r1"}
    body = {
        "n": "{{ parameters.n }}",
        "ok": "{{parameters.ok}}",
        "tags": "{{ parameters.tags }}",
        "cfg": "{{ parameters.cfg }}",
        "doubled": "{{ parameters.n * 2 }}",
        "missing": "{{ parameters.absent }}",
        "spaced": "  {{ parameters.n }}\n",
        "text": "run {{ run_id }} n={{ parameters.n }}",
        "two": "{{ parameters.n }}{{ parameters.n }}",
        "literal": 7,
        "list": ["{{ parameters.n }}", "x", None],
        "tuple": ("{{ parameters.ok }}",),
        "filtered": "{{ parameters.absent | default(4) }}",
    }
    assert render_json(body, context) == {
        "n": 3,
        "ok": True,
        "tags": ["a"],
        "cfg": {"k": 1.5},
        "doubled": 6,
        "missing": None,
        "spaced": 3,
        "text": "run r1 n=3",
        "two": "33",
        "literal": 7,
        "list": [3, "x", None],
        "tuple": [True],
        "filtered": 4,
    }


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"n": "{{ paramters.n }}"}, "body.n"),
        ({"n": "x {{ paramters.n }}"}, "body.n"),
        ({"list": [1, {"deep": "{{ paramters }}"}]}, "body.list[1].deep"),
        ({"n": "{{ 1 / 0 }}"}, "body.n"),
    ],
)
def test_render_json_errors_name_the_field(value: Any, field: str) -> None:
    """A typo in a top-level name (or any render error) fails, naming the field."""
    with pytest.raises(TemplateError) as failed:
        render_json(value, {"parameters": {"n": 1}}, where="body")
    assert str(failed.value).startswith(f"{field}: ")
