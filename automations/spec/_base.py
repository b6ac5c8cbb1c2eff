"""What every spec model shares: strictness, and the lenient input forms people write.

``Labels``, ``LabelsList``, ``Names`` and ``Duration`` are annotated types that
accept the short forms (one string for a list, one dict for a list of dicts,
``'90s'`` for a duration) so that each model does not repeat the coercion.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TEMPLATES = ImmutableSandboxedEnvironment()

LabelSpec = dict[str, list[str]]
"""A label filter: label key → globs (any-of). A single string is accepted on input."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def label_spec(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: as_list(item) for key, item in value.items()}
    return value


def label_specs(value: Any) -> Any:
    # Prefect accepts one dict or a list of dicts; one dict is a list of one.
    if isinstance(value, dict):
        return [label_spec(value)]
    if isinstance(value, list):
        return [label_spec(item) for item in value]
    return value


def parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("within must be a duration such as 90, '90s', '30m', '26h' or '1d'")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found:
            return timedelta(seconds=float(found[1]) * UNIT_SECONDS[found[2]])
        if value.strip().upper().startswith(("P", "-P")):
            return value  # ISO 8601, as model_dump(mode="json") writes it: pydantic parses it
        raise ValueError("within must be a duration such as 90, '90s', '30m', '26h' or '1d'")
    return value


Labels = Annotated[LabelSpec, BeforeValidator(label_spec)]
LabelsList = Annotated[list[LabelSpec], BeforeValidator(label_specs)]
Names = Annotated[list[str], BeforeValidator(as_list)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(parse_duration)]


def check_template(value: str) -> str:
    try:
        _TEMPLATES.parse(value)
    except TemplateSyntaxError as exc:
        raise ValueError(
            f"template syntax error on template line {exc.lineno}: {exc.message}; "
            "fix the Jinja expression (e.g. '{{ event.resource[\"resource.name\"] }}')"
        ) from None
    return value


def check_optional_template(value: str | None) -> str | None:
    return None if value is None else check_template(value)


def check_templates(value: Any) -> Any:
    """Every string inside a JSON value (dict values, list items) must parse as a template."""
    if isinstance(value, str):
        check_template(value)
    elif isinstance(value, dict):
        for item in value.values():
            check_templates(item)
    elif isinstance(value, list):
        for item in value:
            check_templates(item)
    return value


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}; write an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
    return value
