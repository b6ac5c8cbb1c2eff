"""Triggers: Prefect's event trigger, its composites (compound, sequence) and metric trigger.

``EventTrigger`` carries Prefect's full field set with Prefect's client-side
defaults (``prefect/events/schemas/automations.py``): ``posture`` Reactive,
``threshold`` 1, ``within`` 0 s, empty ``match``/``match_related``/``after``/
``expect``/``for_each``; a Proactive trigger with no ``within`` gets 10 s and one
below 10 s is rejected. Runbell additionally requires ``threshold >= 1``.

``CompoundTrigger`` / ``SequenceTrigger`` are Prefect's composite triggers
(``prefect/server/events/schemas/automations.py``): ``triggers`` (any kind, nested
composites included), optional ``within``, and for compound ``require`` (``any``,
``all`` or a whole number between 1 and the number of triggers).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from automations.spec._base import (
    Duration,
    Labels,
    LabelsList,
    Names,
    OptionalDuration,
    Strict,
)

PROACTIVE_MIN_WITHIN = timedelta(seconds=10)


class EventTrigger(Strict):
    """Prefect's event trigger: label filters, event names, posture, threshold, window."""

    type: Literal["event"]
    match: Labels = Field(default_factory=dict)
    match_related: LabelsList = Field(default_factory=list)
    after: Names = Field(default_factory=list)
    expect: Names = Field(default_factory=list)
    for_each: Names = Field(default_factory=list)
    posture: Literal["Reactive", "Proactive"] = "Reactive"
    threshold: int = Field(default=1, ge=1)
    # validate_default so a Proactive trigger without ``within`` gets Prefect's 10 s.
    within: Duration = Field(default=timedelta(0), validate_default=True)

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


class _CompositeTrigger(Strict):
    triggers: list[Trigger] = Field(min_length=1)
    within: OptionalDuration = None

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


METRIC_MIN = timedelta(seconds=300)


class MetricQuery(Strict):
    """Prefect Cloud's ``MetricTriggerQuery``: ``name operator threshold`` over ``range``.

    ``successes`` is a fraction (0.9 = 90 %); ``duration`` and ``lateness`` are
    seconds. ``range`` and ``firing_for`` default to, and may not go below, 300 s
    (Prefect's limits).
    """

    name: Literal["successes", "duration", "lateness"]
    operator: Literal["<", "<=", ">", ">="]
    threshold: float
    range: Duration = Field(default=METRIC_MIN)
    firing_for: Duration = Field(default=METRIC_MIN)

    @field_validator("range", "firing_for")
    @classmethod
    def _check_range(cls, value: timedelta) -> timedelta:
        if value < METRIC_MIN:
            raise ValueError("must be at least 300s (Prefect's minimum); write e.g. '5m'")
        return value

    @field_validator("threshold")
    @classmethod
    def _check_threshold(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("name") == "successes" and not 0 <= value <= 1:
            raise ValueError("a success rate is a fraction; write e.g. 0.9 for 90%")
        if value < 0:
            raise ValueError("must not be negative; durations are seconds, e.g. 600")
        return value


class MetricTrigger(Strict):
    """Prefect Cloud's metric trigger: fires when ``metric`` breaches for ``firing_for``.

    ``match``/``match_related`` pick the flow runs that count; ``for_each`` (runbell)
    keeps one metric per label value, e.g. per deployment.
    """

    type: Literal["metric"]
    posture: Literal["Metric"] = "Metric"
    match: Labels = Field(default_factory=dict)
    match_related: LabelsList = Field(default_factory=list)
    for_each: Names = Field(default_factory=list)
    metric: MetricQuery


Trigger = Annotated[
    Union[EventTrigger, MetricTrigger, CompoundTrigger, SequenceTrigger],  # noqa: UP007 (recursive alias)
    Field(discriminator="type"),
]
"""Every trigger kind, discriminated on ``type``. Add members here."""

_CompositeTrigger.model_rebuild()
CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()

TRIGGER_TYPES: dict[str, type[BaseModel]] = {
    "event": EventTrigger,
    "metric": MetricTrigger,
    "compound": CompoundTrigger,
    "sequence": SequenceTrigger,
}
