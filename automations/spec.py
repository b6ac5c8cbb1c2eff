"""The automation YAML format, as pydantic models.

Strict for what people write: every model forbids unknown keys, so a typo is an
error instead of a silent no-op. Triggers and actions are discriminated unions on
a kebab-case ``type``; a new kind is one more model added to :data:`Trigger` or
:data:`Action` (and to :data:`TRIGGER_TYPES` / :data:`ACTION_TYPES`).

``EventTrigger`` carries Prefect's full field set with Prefect's client-side
defaults (``prefect/events/schemas/automations.py``): ``posture`` Reactive,
``threshold`` 1, ``within`` 0 s, empty ``match``/``match_related``/``after``/
``expect``/``for_each``; a Proactive trigger with no ``within`` gets 10 s and one
below 10 s is rejected. Runbell additionally requires ``threshold >= 1``.

``CompoundTrigger`` / ``SequenceTrigger`` are Prefect's composite triggers
(``prefect/server/events/schemas/automations.py``): ``triggers`` (any kind, nested
composites included), optional ``within``, and for compound ``require`` (``any``,
``all`` or a whole number between 1 and the number of triggers).

Loading (files, ``${VAR}`` substitution, line numbers) lives in ``loader.py``;
these models hold the already-resolved values.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

PROACTIVE_MIN_WITHIN = timedelta(seconds=10)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TEMPLATES = ImmutableSandboxedEnvironment()

LabelSpec = dict[str, list[str]]
"""A label filter: label key → globs (any-of). A single string is accepted on input."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _label_spec(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_list(item) for key, item in value.items()}
    return value


def _parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("within must be a duration such as 90, '90s', '30m', '26h' or '1d'")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found:
            return timedelta(seconds=float(found[1]) * _UNIT_SECONDS[found[2]])
        raise ValueError("within must be a duration such as 90, '90s', '30m', '26h' or '1d'")
    return value


class Channel(_Strict):
    """A notification target. ``url`` is any Apprise URL and is treated as a secret."""

    url: str = Field(min_length=1, repr=False)


class EventTrigger(_Strict):
    """Prefect's event trigger: label filters, event names, posture, threshold, window."""

    type: Literal["event"]
    match: LabelSpec = Field(default_factory=dict)
    match_related: list[LabelSpec] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    expect: list[str] = Field(default_factory=list)
    for_each: list[str] = Field(default_factory=list)
    posture: Literal["Reactive", "Proactive"] = "Reactive"
    threshold: int = Field(default=1, ge=1)
    # validate_default so a Proactive trigger without ``within`` gets Prefect's 10 s.
    within: timedelta = Field(default=timedelta(0), validate_default=True)

    @field_validator("match", mode="before")
    @classmethod
    def _coerce_match(cls, value: Any) -> Any:
        return _label_spec(value)

    @field_validator("match_related", mode="before")
    @classmethod
    def _coerce_match_related(cls, value: Any) -> Any:
        # Prefect accepts one dict or a list of dicts; one dict is a list of one.
        if isinstance(value, dict):
            return [_label_spec(value)]
        if isinstance(value, list):
            return [_label_spec(item) for item in value]
        return value

    @field_validator("after", "expect", "for_each", mode="before")
    @classmethod
    def _coerce_names(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("within", mode="before")
    @classmethod
    def _parse_within(cls, value: Any) -> Any:
        return _parse_duration(value)

    @field_validator("within")
    @classmethod
    def _check_within(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value < timedelta(0):
            raise ValueError("within must not be negative; write 0 or a positive duration")
        if info.data.get("posture") == "Proactive":
            if value == timedelta(0):
                return PROACTIVE_MIN_WITHIN
            if value < PROACTIVE_MIN_WITHIN:
                raise ValueError(
                    "within must be at least 10s for a Proactive trigger; write e.g. '10s' or more"
                )
        return value


class NotifyAction(_Strict):
    """Send a message to a named channel; ``subject``/``body`` are sandboxed Jinja templates."""

    type: Literal["notify"]
    channel: str = Field(min_length=1)
    subject: str | None = None
    body: str | None = None

    @field_validator("subject", "body")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _TEMPLATES.parse(value)
            except TemplateSyntaxError as exc:
                raise ValueError(
                    f"template syntax error on template line {exc.lineno}: {exc.message}; "
                    "fix the Jinja expression (e.g. '{{ event.resource[\"resource.name\"] }}')"
                ) from None
        return value


class _CompositeTrigger(_Strict):
    triggers: list[Trigger] = Field(min_length=1)
    within: timedelta | None = None

    @field_validator("within", mode="before")
    @classmethod
    def _parse_within(cls, value: Any) -> Any:
        return _parse_duration(value)

    @field_validator("within")
    @classmethod
    def _check_within(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError("within must not be negative; write 0 or a positive duration")
        return value


class CompoundTrigger(_CompositeTrigger):
    """Fires when ``require`` (``any``, ``all`` or N) of ``triggers`` fired within ``within``."""

    type: Literal["compound"]
    require: int | Literal["any", "all"]

    @field_validator("require")
    @classmethod
    def _check_require(cls, value: int | str, info: ValidationInfo) -> int | str:
        triggers = info.data.get("triggers")
        if isinstance(value, int):
            if value < 1:
                raise ValueError("require must be at least 1; write 'any', 'all' or e.g. 2")
            if triggers is not None and value > len(triggers):
                raise ValueError(
                    f"require is {value} but there are only {len(triggers)} triggers; "
                    "write 'all' or a smaller number"
                )
        return value

    @property
    def expected_firings(self) -> int:
        """How many distinct child triggers must have fired (Prefect's num_expected_firings)."""
        if self.require == "any":
            return 1
        if self.require == "all":
            return len(self.triggers)
        return int(self.require)


class SequenceTrigger(_CompositeTrigger):
    """Fires when every one of ``triggers`` fired, in order, within ``within``."""

    type: Literal["sequence"]


Trigger = Annotated[
    Union[EventTrigger, CompoundTrigger, SequenceTrigger],  # noqa: UP007 (recursive alias)
    Field(discriminator="type"),
]
"""Every trigger kind, discriminated on ``type``. Add members here."""

_CompositeTrigger.model_rebuild()
CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()

Action = Annotated[NotifyAction, Field(discriminator="type")]
"""Every action kind, discriminated on ``type``. Add members here."""

TRIGGER_TYPES: dict[str, type[BaseModel]] = {
    "event": EventTrigger,
    "compound": CompoundTrigger,
    "sequence": SequenceTrigger,
}
ACTION_TYPES: dict[str, type[BaseModel]] = {"notify": NotifyAction}


class Automation(_Strict):
    """A named trigger and the actions it fires (and runs again when it resolves)."""

    name: str = Field(min_length=1)
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    actions: list[Action] = Field(min_length=1)
    actions_on_resolve: list[Action] = Field(default_factory=list)


class Config(_Strict):
    """Everything loaded from one or more automation files, merged."""

    channels: dict[str, Channel] = Field(default_factory=dict)
    automations: list[Automation] = Field(default_factory=list)

    _secrets: frozenset[str] = PrivateAttr(default=frozenset())

    def secrets(self) -> frozenset[str]:
        """Every value that must never be logged: resolved ``${VAR}`` values and channel URLs."""
        urls = {channel.url for channel in self.channels.values() if channel.url}
        return self._secrets | urls

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (longest first)."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def with_secrets(self, secrets: frozenset[str]) -> Config:
        """A copy that also treats ``secrets`` as secret (used by the loader)."""
        copy = self.model_copy()
        copy._secrets = self._secrets | secrets
        return copy
