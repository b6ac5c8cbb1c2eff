"""The event envelope: JSON round trip, limits, Prefect normalisation."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from events import MAX_DEPTH, MAX_EVENT_BYTES, MAX_LABELS, MAX_RELATED, Event

SAMPLES = sorted((Path(__file__).parent.parent / "fixtures" / "prefect").glob("*.json"))


def native(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": str(uuid4()),
        "occurred": "2026-11-21T11:36:31.269221Z",
        "event": "flow-run.Failed",
        "resource": {"resource.id": "flow-run.1", "resource.name": "daft-wallaby"},
        "related": [{"resource.id": "tag.production", "resource.role": "tag"}],
        "payload": {"n": 1, "nested": {"list": [1, 2.5, None, "x"]}},
    }
    base.update(overrides)
    return base


def test_json_round_trip_is_exact() -> None:
    """An event serialised and parsed again is equal to the original."""
    event = Event.model_validate(native(follows=str(uuid4())))
    assert Event.from_json(event.to_json()) == event


def test_unknown_envelope_fields_are_ignored() -> None:
    """Lenient on the wire: a newer producer's extra field does not break parsing."""
    event = Event.model_validate(native(future_field={"x": 1}))
    assert event.event == "flow-run.Failed"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"occurred": "2026-11-21T11:36:31"}, "occurred"),
        ({"resource": {"resource.name": "x"}}, "resource"),
        ({"related": [{"resource.id": "tag.x"}]}, "related"),
        ({"event": ""}, "event"),
        ({"payload": [1, 2]}, "payload"),
    ],
)
def test_invalid_fields_are_named(change: dict[str, Any], field: str) -> None:
    """Each invalid field gets an error whose location names it."""
    with pytest.raises(ValidationError) as info:
        Event.model_validate(native(**change))
    assert field in {str(err["loc"][0]) for err in info.value.errors()}


def test_limits_are_enforced_with_clear_errors() -> None:
    """More than 500 labels, 100 related resources or 1 MB is refused, saying which limit."""
    labels = {"resource.id": "x", **{f"k{i}": "v" for i in range(MAX_LABELS)}}
    with pytest.raises(ValidationError, match="limit is 500"):
        Event.model_validate(native(resource=labels))
    related = [{"resource.id": f"tag.{i}", "resource.role": "tag"} for i in range(MAX_RELATED + 1)]
    with pytest.raises(ValidationError, match="limit is 100"):
        Event.model_validate(native(related=related))
    with pytest.raises(ValidationError, match="limit is 1000000"):
        Event.model_validate(native(payload={"blob": "x" * MAX_EVENT_BYTES}))
    with pytest.raises(ValueError, match="limit is 1000000"):
        Event.from_json(b" " * (MAX_EVENT_BYTES + 1))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_prefect_events_normalise_and_convert_back_losslessly(sample: Path) -> None:
    """A real Prefect event loses its `prefect.` prefixes and to_prefect() restores it exactly."""
    raw = json.loads(sample.read_text())
    event = Event.model_validate(raw)
    assert not event.event.startswith("prefect.")
    assert all(not key.startswith("prefect.") for key in event.resource)
    assert not event.resource_id.startswith("prefect.")
    assert event.to_prefect() == raw
    # and through our own wire format too
    assert Event.from_json(event.to_json()).to_prefect() == raw


def test_prefect_names_map_as_designed() -> None:
    """prefect.flow-run.Failed → flow-run.Failed; prefect.tag.x → tag.x; labels lose the prefix."""
    raw = json.loads((SAMPLES[0].parent / "flow_run_Failed_work_pool_deployment.json").read_text())
    event = Event.model_validate(raw)
    assert event.event == "flow-run.Failed"
    assert event.resource["state-message"].startswith("Flow run encountered")
    assert {"resource.id": "tag.lab", "resource.role": "tag"} in event.related
    pool = event.related_by_role("work-pool")[0]
    assert pool["work-pool.type"] == "process"


def test_bare_names_in_prefect_events_survive() -> None:
    """Custom (unprefixed) names in a Prefect event come back unprefixed."""
    raw = {
        "id": str(uuid4()),
        "occurred": "2026-11-21T11:36:31.269221Z",
        "event": "acme.pipeline.done",
        "resource": {"prefect.resource.id": "acme.pipeline.7", "team": "data"},
        "related": [],
        "payload": {},
        "follows": None,
    }
    event = Event.model_validate(raw)
    assert event.event == "acme.pipeline.done"
    assert event.resource == {"resource.id": "acme.pipeline.7", "team": "data"}
    assert event.to_prefect() == raw


def test_colliding_prefect_labels_are_refused() -> None:
    """`prefect.x` and `x` on one resource cannot both survive normalisation: a clear error."""
    raw = native(resource={"prefect.resource.id": "prefect.flow-run.1", "resource.id": "y"})
    with pytest.raises(ValidationError, match="collide"):
        Event.model_validate(raw)


def test_id_text_is_the_id_formatted_even_after_a_copy() -> None:
    from uuid import UUID

    event = Event.model_validate(
        {
            "id": str(UUID(int=7)),
            "occurred": "2026-11-21T10:00:00Z",
            "event": "x.y",
            "resource": {"resource.id": "r"},
        }
    )
    assert event.id_text == str(UUID(int=7)) == event.id_text
    copy = event.model_copy(update={"id": UUID(int=8)})
    assert copy.id_text == str(UUID(int=8))
    assert event == event.model_copy()  # the cached text is not a field
    assert "_id_text" not in event.model_dump()


def _json_cases() -> list[str]:
    prefect = json.loads(SAMPLES[0].read_text()) if SAMPLES else None
    cases: list[Any] = [
        native(),
        native(follows=str(uuid4()), received="2026-11-21T12:00:00+02:00"),
        native(origin={"kind": "prefect", "bare": ["event:x"]}),
        native(payload={"big": 1e15, "ü": "é\u0001", "deep": [[{"a": None}]]}),
        native(resource={"resource.id": "r", "n": 1}),  # a label that is not a string
        native(resource={"resource.name": "no id"}),
        native(related=[{"resource.id": "x"}]),  # no role
        native(related=[{"resource.id": "x", "resource.role": "r"}] * (MAX_RELATED + 1)),
        native(occurred="2026-11-21T11:36:31"),  # naive
        native(id="not-a-uuid"),
        native(event=""),
        {**native(), "resource": {"prefect.resource.id": "prefect.flow-run.1"}},
        native(payload={"pad": "x" * (MAX_EVENT_BYTES // 10)}),  # past the shortcut
        native(payload={"pad": "x" * MAX_EVENT_BYTES}),  # too big
        native(payload=nested(MAX_DEPTH)),  # deep, but within the limit
        native(payload=nested(MAX_DEPTH + 1)),  # one level too deep
        native(payload={"wide": [[1]] * (MAX_DEPTH + 1)}),  # many brackets, shallow
        native(payload=nested(300)),  # past pydantic's JSON reader
        native(event="flow-run.\u0000"),  # a NUL the store cannot hold
    ]
    if prefect is not None:
        cases.append(prefect)
    texts = [json.dumps(case) for case in cases]
    # A Prefect resource spelled with an escape, and odd but valid JSON text.
    texts.append(texts[-1].replace("prefect.resource.id", "prefect\\u002eresource.id"))
    texts.append(json.dumps(native(), indent=2, ensure_ascii=True))
    texts.append("[]")
    texts.append("{not json")
    return texts


def nested(depth: int, inner: Any = None) -> Any:
    """``depth`` objects deep (``{}`` is one), ``inner`` at the bottom if given."""
    value: Any = {} if inner is None else {"v": inner}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def listed(depth: int) -> Any:
    """An object holding arrays: ``depth`` containers deep in all."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"l": value}


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({}, None),
        ({"flat": 1, "s": "{[" * 100}, None),  # brackets in strings are not depth
        (nested(MAX_DEPTH), None),
        (listed(MAX_DEPTH), None),
        ({"wide": [{"a": [1]}] * 500}, None),  # many containers, three levels
        (nested(MAX_DEPTH + 1), "payload" + ".a" * MAX_DEPTH),
        (listed(MAX_DEPTH + 1), "payload.l" + "[0]" * (MAX_DEPTH - 1)),
        ({"ok": nested(3), "bad": [nested(MAX_DEPTH)]}, "payload.bad[0]" + ".a" * (MAX_DEPTH - 2)),
        (nested(300), "payload" + ".a" * MAX_DEPTH),  # past orjson's writer
        (nested(300, inner=2**70), "payload" + ".a" * MAX_DEPTH),  # and json's fallback
        (nested(1000), "payload" + ".a" * MAX_DEPTH),  # past Python's recursion limit
    ],
    ids=["empty", "brackets-in-text", "at-limit", "lists-at-limit", "wide", "one-past",
         "lists-one-past", "deep-in-list", "300", "300-big-int", "1000"],
)  # fmt: skip
def test_payload_depth_is_limited(payload: dict[str, Any], where: str | None) -> None:
    """A payload nests at most MAX_DEPTH levels; past it the error names the limit and
    the path to the first container too deep, however deep the input."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)  # json.dumps of the 1000-deep case
    try:
        text = json.dumps(native(payload=payload))
    finally:
        sys.setrecursionlimit(limit)
    if where is None:
        event = Event.model_validate(native(payload=payload))
        assert Event.model_validate_json(event.to_json()).payload == payload
        assert Event.from_json(text).payload == payload
        return
    for parse in (Event.model_validate, Event.from_parsed_json):
        with pytest.raises(ValidationError) as caught:
            parse(native(payload=payload))
        [error] = caught.value.errors()
        assert f"payload nested deeper than {MAX_DEPTH} (MAX_DEPTH) at {where}" in error["msg"]
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH}|recursion limit"):
        Event.from_json(text)


def test_nul_in_stored_text_columns_is_refused() -> None:
    """The name and resource.id go to text columns, where PostgreSQL refuses NUL."""
    with pytest.raises(ValidationError, match="event"):
        Event.model_validate(native(event="flow-run.\x00"))
    with pytest.raises(ValidationError, match="NUL"):
        Event.model_validate(native(resource={"resource.id": "flow-run.\x00"}))
    assert Event.model_validate(native(payload={"s": "\x00"})).payload == {"s": "\x00"}


@pytest.mark.parametrize("text", _json_cases())
@pytest.mark.parametrize("kind", [str, bytes])
def test_model_validate_json_shortcut_gives_pydantics_answer(text: str, kind: type) -> None:
    """Same event, or the same errors, as pydantic's own validator on the same text."""
    from events.model import _NATIVE

    assert _NATIVE is not None  # the shortcut exists with this pydantic
    data = text if kind is str else text.encode()

    def answer(parse: Any) -> Any:
        try:
            return parse(data)
        except ValidationError as exc:
            return [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]

    ours = answer(Event.model_validate_json)
    theirs = answer(Event.__pydantic_validator__.validate_json)
    assert ours == theirs


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
_labels = st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)
_moments = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))]))


@settings(max_examples=300, deadline=None)
@given(
    occurred=_moments,
    received=st.none() | _moments,
    follows=st.none() | st.uuids(),
    resource=_labels,
    related=st.lists(_labels, max_size=3),
    payload=st.dictionaries(st.text(max_size=5), _json_values, max_size=4),
    prefect=st.booleans(),
    via=st.sampled_from(["json", "from_json", "copy", "python"]),
)
def test_json_dict_is_pydantics_json_dump(
    occurred: datetime,
    received: datetime | None,
    follows: Any,
    resource: dict[str, str],
    related: list[dict[str, str]],
    payload: dict[str, Any],
    prefect: bool,
    via: str,
) -> None:
    """The firing context's event (Event.json_dict, built by hand) is exactly
    model_dump(mode="json", exclude_none=True), however the event was made."""
    prefix = "prefect." if prefect else ""
    wire: dict[str, Any] = {
        "id": str(uuid4()),
        "occurred": occurred.isoformat(),
        "event": f"{prefix}flow-run.Failed",
        "resource": {**resource, f"{prefix}resource.id": f"{prefix}flow-run.1"},
        "related": [
            {**labels, f"{prefix}resource.id": f"x.{i}", f"{prefix}resource.role": "r"}
            for i, labels in enumerate(related)
        ],
        "payload": payload,
    }
    if received is not None:
        wire["received"] = received.isoformat()
    if follows is not None:
        wire["follows"] = str(follows)
    try:
        parsed = Event.model_validate_json(json.dumps(wire))
    except ValidationError:
        return  # label collisions once the prefix is dropped: not this test's business
    if via == "from_json":
        event = Event.from_json(json.dumps(wire))
    elif via == "copy":  # a copy with a payload of Python objects: pydantic's dump
        event = parsed.model_copy(update={"payload": {"at": occurred, **payload}})
    elif via == "python":
        event = Event.model_validate(parsed.model_dump())
    else:
        event = parsed
    assert event.json_dict() == event.model_dump(mode="json", exclude_none=True)
    assert json.dumps(event.json_dict()) == json.dumps(
        event.model_dump(mode="json", exclude_none=True)
    )


def test_an_integer_past_64_bits_is_a_valid_payload_and_stores() -> None:
    """orjson refuses it; the size check and the JSON columns must not."""
    from events.database import driver_json

    text = json.dumps(native(payload={"n": 2**70}))
    event = Event.model_validate_json(text)
    assert event.payload == {"n": 2**70}
    assert driver_json({"events": [event.json_dict()]}) == (
        '{"events":[' + event.model_dump_json(exclude_none=True) + "]}"
    )


@pytest.mark.parametrize("number", [2**70, -(2**70), 2**64, -(2**63) - 1, 2**63 - 1])
def test_json_loads_keeps_integers_past_64_bits_exact(number: int) -> None:
    """orjson reads them as floats; json_loads and Event.from_json keep every digit."""
    from events.model import json_loads

    text = json.dumps(native(payload={"n": number, "list": [number], "s": "9" * 30}))
    assert json_loads(text.encode())["payload"]["n"] == number
    assert json_loads(text)["payload"]["list"] == [number]
    event = Event.from_json(text.encode())
    assert event.payload == {"n": number, "list": [number], "s": "9" * 30}
    assert type(event.payload["n"]) is int


def test_json_loads_refuses_what_orjson_refuses() -> None:
    """The exact re-reading never widens what is accepted (NaN, trailing garbage)."""
    import orjson

    from events.model import json_loads

    for text in (b"[NaN, 12345678901234567890]", b"[12345678901234567890] x"):
        with pytest.raises(orjson.JSONDecodeError):
            json_loads(text)
