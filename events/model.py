"""The event envelope: Prefect's shape with neutral keys.

Lenient on the wire (unknown envelope fields are ignored, so newer producers do
not break older consumers); strict about what the engine relies on: an id, an
aware ``occurred``, a dotted name and a ``resource.id``.

Prefect-shaped events (``prefect.`` names, ``prefect.resource.*`` labels) are
normalised on the way in by dropping the prefix from the event name, label keys
and resource ids. Names that arrived *without* the prefix are remembered in
``origin.bare`` so :meth:`Event.to_prefect` gives back exactly what came in.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar
from uuid import UUID

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.config import ExtraValues
from pydantic_core import SchemaValidator

MAX_EVENT_BYTES = 1_000_000
MAX_LABELS = 500
MAX_RELATED = 100
# How deep a payload may nest, counting the payload object as level one: well under
# what the event's own JSON goes through, so a parsed event can always be written and
# read back. pydantic's JSON reader (the store's and the bus's read) stops past ~200
# levels, its writer (``to_json``: every store insert and publish) past 256, orjson's
# writer past 255 and its reader past 1023. Labels are flat strings by type.
MAX_DEPTH = 64

PREFECT_PREFIX = "prefect."
_RESOURCE_ID = "resource.id"
_RESOURCE_ROLE = "resource.role"
_ID_TEXT = "_id_text"  # __dict__ key of the cached id text (not a field)
# __dict__ key of the payload an event was parsed with from JSON text (not a field): that
# payload holds JSON types only, so json_dict() can hand it on as it is.
_JSON_PAYLOAD = "_json_payload"
_UTC_SUFFIX = "+00:00"
_NO_NUL = r"^[^\x00]*$"


class Origin(BaseModel):
    """Where a normalised event came from, kept so the conversion is lossless."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["prefect"] = "prefect"
    # Names that had no ``prefect.`` prefix at the source, tagged by namespace:
    # "event:<name>", "label:<key>", "id:<resource id>".
    bare: tuple[str, ...] = ()


class Event(BaseModel):
    """One thing that happened to one resource. ``id`` makes ingestion idempotent."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: UUID
    occurred: AwareDatetime
    # No NUL: the store keeps the name and resource.id in text columns, which
    # PostgreSQL refuses a NUL in (the JSON of the rest escapes it).
    event: str = Field(min_length=1, max_length=1024, pattern=_NO_NUL)
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)
    follows: UUID | None = None
    received: AwareDatetime | None = None
    origin: Origin | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise_prefect(cls, data: Any) -> Any:
        if isinstance(data, dict) and _looks_prefect(data):
            return _from_prefect(data)
        return data

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get(_RESOURCE_ID):
            raise ValueError("resource needs a non-empty 'resource.id' label")
        if "\x00" in value[_RESOURCE_ID]:
            raise ValueError("resource.id must not contain a NUL character")
        if len(value) > MAX_LABELS:
            raise ValueError(f"resource has {len(value)} labels; the limit is {MAX_LABELS}")
        return value

    @field_validator("related")
    @classmethod
    def _check_related(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if len(value) > MAX_RELATED:
            raise ValueError(f"{len(value)} related resources; the limit is {MAX_RELATED}")
        for index, labels in enumerate(value):
            if not labels.get(_RESOURCE_ID) or not labels.get(_RESOURCE_ROLE):
                raise ValueError(f"related[{index}] needs 'resource.id' and 'resource.role'")
            if len(labels) > MAX_LABELS:
                raise ValueError(
                    f"related[{index}] has {len(labels)} labels; the limit is {MAX_LABELS}"
                )
        return value

    @model_validator(mode="after")
    def _check_size(self) -> Event:
        # The payload dominates size; labels are bounded above. Its JSON also bounds
        # its depth (no more levels than brackets), so the walk runs only for a payload
        # with more than MAX_DEPTH brackets, or one orjson refused (past 255 levels, or
        # an integer past 64 bits) -- before ``json`` would recurse on it.
        size = 0
        if self.payload:
            try:
                dumped: bytes | None = orjson.dumps(self.payload)
            except orjson.JSONEncodeError:
                dumped = None
            if (dumped is None or _brackets(dumped) > MAX_DEPTH) and too_deep(self.payload):
                raise ValueError(
                    f"payload nested deeper than {MAX_DEPTH} (MAX_DEPTH) "
                    f"at {_deep_path(self.payload)}"
                )
            size = len(json_bytes(self.payload) if dumped is None else dumped)
        for labels in (self.resource, *self.related):
            size += sum(map(len, labels)) + sum(map(len, labels.values()))
        if size > MAX_EVENT_BYTES:
            raise ValueError(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")
        return self

    # -- convenience -------------------------------------------------------
    @property
    def resource_id(self) -> str:
        return self.resource[_RESOURCE_ID]

    @property
    def id_text(self) -> str:
        """``str(self.id)``, formatted once per event (the engine asks for it at every step).

        Kept beside the fields, with the UUID it was made from: a copy with another
        ``id`` (``model_copy(update=...)``) formats its own.
        """
        cached = self.__dict__.get(_ID_TEXT)
        if cached is not None and cached[0] is self.id:
            return cached[1]  # type: ignore[no-any-return]
        text = str(self.id)
        self.__dict__[_ID_TEXT] = (self.id, text)
        return text

    def related_by_role(self, role: str) -> list[dict[str, str]]:
        return [labels for labels in self.related if labels.get(_RESOURCE_ROLE) == role]

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        """Pydantic's, with a shortcut for the JSON runbell writes (the bus, the store).

        Same result, same errors: when the text cannot hold a Prefect-shaped resource
        (no ``prefect.resource.id``, no ``\\u`` escape that could spell one), the Prefect
        normalisation has nothing to do; when it is at most a tenth of
        ``MAX_EVENT_BYTES``, the size check cannot fail (re-serialised, a JSON payload
        grows at most 4.5 times: ``1e15`` → ``1000000000000000.0``). Both are skipped;
        the depth check too, unless the text has more than ``MAX_DEPTH`` brackets.
        """
        if (
            _NATIVE is not None
            and cls is Event
            and strict is None
            and extra is None
            and context is None
            and by_alias is None
            and by_name is None
            and len(json_data) <= _NATIVE_MAX_BYTES
            and not _may_be_prefect(json_data)
        ):
            event: Self = _NATIVE.validate_json(json_data)
            if not (_brackets(json_data) > MAX_DEPTH and too_deep(event.payload)):
                return _parsed(event)
            # Too deep: the full validation below raises the depth error.
        return _parsed(
            super().model_validate_json(
                json_data,
                strict=strict,
                extra=extra,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        )

    @classmethod
    def from_parsed_json(cls, data: Any) -> Event:
        """``model_validate`` of what a JSON parser returned (``orjson.loads``): the
        payload is known to hold JSON types only (see :meth:`json_dict`)."""
        return _parsed(cls.model_validate(data))

    def json_dict(self) -> dict[str, Any]:
        """``model_dump(mode="json", exclude_none=True)``, built without pydantic's
        serializer for an event parsed from JSON with UTC times (what the bus and the
        store carry): it was the engine's largest cost per firing (a firing's context
        holds its events). ``resource``, ``related`` and ``payload`` are this event's own
        containers, not copies: the result is read-only, like the event."""
        received = self.received
        if (
            self.__dict__.get(_JSON_PAYLOAD) is not self.payload
            or self.occurred.utcoffset()
            or (received is not None and received.utcoffset())
        ):
            return self.model_dump(mode="json", exclude_none=True)
        out: dict[str, Any] = {
            "id": self.id_text,
            "occurred": _zulu(self.occurred),
            "event": self.event,
            "resource": self.resource,
            "related": self.related,
            "payload": self.payload,
        }
        if self.follows is not None:
            out["follows"] = str(self.follows)
        if received is not None:
            out["received"] = _zulu(received)
        if self.origin is not None:
            out["origin"] = {"kind": self.origin.kind, "bare": list(self.origin.bare)}
        return out

    def to_json(self) -> bytes:
        # Serialised in pydantic-core in one pass (no intermediate dict): every
        # publish and every store insert goes through here.
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """Parse one event; raises :class:`ValueError` for malformed or oversized input."""
        if len(raw) > MAX_EVENT_BYTES:
            raise ValueError(f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
        return cls.from_parsed_json(json_loads(raw))

    def with_received(self, received: datetime) -> Event:
        return self.model_copy(update={"received": received})

    def to_prefect(self) -> dict[str, Any]:
        """The Prefect wire shape of this event (inverse of the normalisation)."""
        bare = set(self.origin.bare) if self.origin else set()

        def name(kind: str, value: str) -> str:
            return value if f"{kind}:{value}" in bare else PREFECT_PREFIX + value

        def labels(source: dict[str, str]) -> dict[str, str]:
            out: dict[str, str] = {}
            for key, value in source.items():
                if key == _RESOURCE_ID:
                    value = name("id", value)
                out[name("label", key)] = value
            return out

        return {
            "occurred": _iso(self.occurred),
            "event": name("event", self.event),
            "resource": labels(self.resource),
            "related": [labels(r) for r in self.related],
            "payload": self.payload,
            "id": str(self.id),
            "follows": str(self.follows) if self.follows else None,
            **({"received": _iso(self.received)} if self.received else {}),
        }


def json_bytes(value: Any) -> bytes:
    """orjson's JSON; ``json``'s for what orjson refuses of valid JSON values (an integer
    past 64 bits, which pydantic parses from the bus): sizing or storing an event must
    never fail on it, or its batch would fail over and over."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def json_loads(raw: bytes | bytearray | str) -> Any:
    """``orjson.loads`` (its errors, its checks), but exact for integers past 64 bits,
    which orjson reads as floats: text with a run of 19 digits is read again with
    ``json``, which keeps every integer (so 2**70 comes back as 2**70, not 1.18e21)."""
    value = orjson.loads(raw)
    long_digits = _LONG_DIGITS_TEXT if isinstance(raw, str) else _LONG_DIGITS
    if long_digits.search(raw) is None:  # type: ignore[arg-type]
        return value
    try:
        return json.loads(raw)
    except RecursionError as exc:  # orjson allows more nesting than Python's stack
        raise orjson.JSONDecodeError("JSON nested too deeply", str(raw[:64]), 0) from exc


# 19 digits: the shortest integer orjson would not keep (-2**63 - 1); a run inside a
# string or a fraction only costs the second, exact, reading.
_LONG_DIGITS = re.compile(rb"\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")


def too_deep(value: dict[str, Any] | list[Any], limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests more than ``limit`` objects/arrays deep (``value`` itself is
    level one). Level by level, so no depth of input can exhaust the stack, and it
    stops at the first level past the limit."""
    level: list[Any] = [value]
    for _ in range(limit):
        below: list[Any] = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, dict | list | tuple):
                    below.append(child)
        if not below:
            return False
        level = below
    return True


def _deep_path(value: dict[str, Any], limit: int = MAX_DEPTH) -> str:
    """The path, from ``payload``, to the first container past ``limit`` levels (for the
    error message). One walk like :func:`too_deep`'s, keeping each container's parent."""
    # (key or index, parent's index here): the path is followed back from the deep one.
    steps: list[tuple[str | int, int]] = [("payload", -1)]
    stack: list[tuple[Any, int, int]] = [(value, 1, 0)]
    found = 0
    while stack and not found:
        node, depth, at = stack.pop()
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(child, dict | list | tuple):
                steps.append((key, at))
                if depth >= limit:
                    found = len(steps) - 1
                    break
                stack.append((child, depth + 1, len(steps) - 1))
    keys: list[str | int] = []
    while found > 0:
        key, found = steps[found]
        keys.append(key)
    path = "payload" + "".join(
        f"[{key}]" if isinstance(key, int) else f".{key}" for key in reversed(keys)
    )
    return path if len(path) <= _PATH_CHARS else path[: _PATH_CHARS - 1] + "…"


_PATH_CHARS = 200
_E = TypeVar("_E", bound=Event)


def _parsed(event: _E) -> _E:
    event.__dict__[_JSON_PAYLOAD] = event.payload
    return event


def isoformat(moment: datetime) -> str:
    """``moment.isoformat()``, kept for the last datetime object asked about: an event's
    arrival is formatted for its firing's key and again for the firing's context."""
    global _LAST_ISO
    last = _LAST_ISO
    if last[0] is moment:
        return last[1]
    text = moment.isoformat()
    _LAST_ISO = (moment, text)
    return text


_LAST_ISO: tuple[datetime | None, str] = (None, "")


def _zulu(moment: datetime) -> str:
    """A UTC time as pydantic writes it in JSON mode (``...Z``)."""
    text = isoformat(moment)
    return text[: -len(_UTC_SUFFIX)] + "Z" if text.endswith(_UTC_SUFFIX) else text


def _native_validator() -> SchemaValidator | None:
    """Event's validator without ``_normalise_prefect`` and ``_check_size`` (None if
    pydantic lays the schema out otherwise than expected: then there is no shortcut)."""
    schema: Any = Event.__pydantic_core_schema__
    try:
        model = schema["schema"]
        before = model["schema"]
        if not (
            schema["type"] == "function-after"
            and schema["function"]["function"] is Event._check_size
            and model["type"] == "model"
            and model["cls"] is Event
            and before["type"] == "function-before"
            and before["function"]["function"] == Event._normalise_prefect
            and before["schema"]["type"] == "model-fields"
        ):
            return None
        return SchemaValidator({**model, "schema": before["schema"]})
    except (KeyError, TypeError):
        return None


def _brackets(json_data: str | bytes | bytearray) -> int:
    """How many objects and arrays the text opens at most (brackets in strings count too):
    a bound on its depth, counted in C."""
    if isinstance(json_data, str):
        return json_data.count("{") + json_data.count("[")
    return json_data.count(b"{") + json_data.count(b"[")


def _may_be_prefect(json_data: str | bytes | bytearray) -> bool:
    if isinstance(json_data, str):
        return "prefect.resource.id" in json_data or "\\u" in json_data
    return b"prefect.resource.id" in json_data or b"\\u" in json_data


_NATIVE = _native_validator()
_NATIVE_MAX_BYTES = MAX_EVENT_BYTES // 10


def _iso(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def _looks_prefect(data: dict[str, Any]) -> bool:
    resource = data.get("resource")
    return isinstance(resource, dict) and "prefect.resource.id" in resource


def _from_prefect(data: dict[str, Any]) -> dict[str, Any]:
    bare: list[str] = []

    def strip(kind: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.startswith(PREFECT_PREFIX):
            return value[len(PREFECT_PREFIX) :]
        bare.append(f"{kind}:{value}")
        return value

    def labels(source: Any, where: str) -> Any:
        if not isinstance(source, dict):
            return source
        out: dict[str, Any] = {}
        for key, value in source.items():
            new_key = strip("label", key)
            if new_key in out:
                raise ValueError(
                    f"{where} has both '{key}' and '{PREFECT_PREFIX}{key}'; "
                    "they would collide once the prefix is dropped"
                )
            out[new_key] = strip("id", value) if new_key == _RESOURCE_ID else value
        return out

    out = dict(data)
    out["event"] = strip("event", data.get("event"))
    out["resource"] = labels(data.get("resource"), "resource")
    related = data.get("related")
    if isinstance(related, list):
        out["related"] = [labels(r, f"related[{i}]") for i, r in enumerate(related)]
    out["origin"] = {"kind": "prefect", "bare": sorted(set(bare))}
    return out
