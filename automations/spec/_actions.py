"""Actions: what an automation does when it fires (and resolves), and their retry policy.

Every string an action sends is a sandboxed Jinja template, checked for syntax
here so that a typo is a load error, not a failed delivery.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from automations.spec._base import (
    Duration,
    OptionalDuration,
    Strict,
    check_optional_template,
    check_template,
    check_templates,
    parse_duration,
)

STATE_TYPES = frozenset(
    {
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "CRASHED",
        "PAUSED",
        "CANCELLING",
    }
)
"""The run state types a ``change_run_state`` call may ask for (Prefect's)."""


class RetrySpec(Strict):
    """Per-action delivery policy; a field left out keeps the dispatcher's default
    (9 attempts on the schedule immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h,
    each ±20 %; none after 3 days). ``backoff`` replaces the schedule with exponential
    backoff from it (doubling, jittered, capped at 5 min); ``max_attempts`` counts every
    attempt, the first included; no attempt is made after ``max_age``."""

    max_attempts: int | None = Field(default=None, ge=1, le=100)
    max_age: OptionalDuration = None
    backoff: OptionalDuration = None

    @field_validator("max_age", "backoff")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. '2s' or '1h'")
        return value


class _Action(Strict):
    retry: RetrySpec | None = None


GROUP_WAIT = timedelta(seconds=30)
GROUP_INTERVAL = timedelta(minutes=5)
REPEAT_INTERVAL = timedelta(hours=4)


class NotifyAction(_Action):
    """Send a message to a named channel; ``subject``/``body`` are sandboxed Jinja templates.

    Without subject/body the default message for the event family is sent.
    ``fallback`` names a channel that gets the message once this one is dead-lettered.

    ``group_by`` (label names, ``["..."]`` for every label) turns on Alertmanager-style
    grouping (``automations/delivery/grouping_stage.py``): firings become alerts in groups of
    equal ``group_by`` values, and each group is sent as one digest ``group_wait``
    after it opens, then at most every ``group_interval`` while it changes, and again
    every ``repeat_interval`` while it still fires; ``send_resolved`` says when its
    alerts resolved. With ``group_by``, ``subject``/``body`` see the digest
    (``alerts``, ``firing``, ``resolved``, ``group_labels``, ``counts``).
    """

    type: Literal["notify"]
    channel: str = Field(min_length=1)
    subject: str | None = None
    body: str | None = None
    fallback: str | None = Field(default=None, min_length=1)
    group_by: list[str] | None = Field(default=None, min_length=1)
    group_wait: timedelta = GROUP_WAIT
    group_interval: timedelta = GROUP_INTERVAL
    repeat_interval: timedelta = REPEAT_INTERVAL
    send_resolved: bool = True

    @field_validator("subject", "body")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        return check_optional_template(value)

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not label.strip() for label in value):
            raise ValueError("group_by takes label names, e.g. [deployment] or ['...'] for all")
        return value

    @field_validator("group_wait", "group_interval", "repeat_interval", mode="before")
    @classmethod
    def _parse_interval(cls, value: Any) -> Any:
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError("must be a duration such as '30s', '5m' or '4h'") from None

    @field_validator("group_wait")
    @classmethod
    def _check_wait(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("group_wait must not be negative; write 0 or e.g. '30s'")
        return value

    @field_validator("group_interval", "repeat_interval")
    @classmethod
    def _check_interval(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. '5m' or '4h'")
        return value

    @model_validator(mode="after")
    def _grouping_needs_group_by(self) -> NotifyAction:
        # Compared with the defaults, not model_fields_set: a stored action
        # (model_dump) carries every field, grouped or not.
        changed = (
            self.group_wait != GROUP_WAIT
            or self.group_interval != GROUP_INTERVAL
            or self.repeat_interval != REPEAT_INTERVAL
            or not self.send_resolved
        )
        if self.group_by is None and changed:
            raise ValueError(
                "group_wait, group_interval, repeat_interval and send_resolved only apply "
                "with group_by; add group_by: [deployment] (or ['...']) or remove them"
            )
        return self


_RUN_ID = "{{ run.id }}"


class _OrchestratorAction(_Action):
    orchestrator: str | None = Field(default=None, min_length=1)  # default: the only one


class _RunAction(_OrchestratorAction):
    run_id: str = Field(default=_RUN_ID, min_length=1)

    @field_validator("run_id")
    @classmethod
    def _check_run_id(cls, value: str) -> str:
        return check_template(value)


class CallWebhookAction(_Action):
    """Call an HTTP endpoint; strings in url/headers/body are templates, JSON types are kept.

    A non-2xx answer is a failure (5xx/429/408 retryable, ``Retry-After`` honoured).
    """

    type: Literal["call-webhook"]
    url: str = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    payload: str | None = None  # Prefect's form: one template rendered to the raw body text
    timeout: Duration = timedelta(seconds=10)

    @field_validator("url", "headers", "body", "payload")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return check_templates(value)

    @model_validator(mode="after")
    def _one_body(self) -> CallWebhookAction:
        if self.body is not None and self.payload is not None:
            raise ValueError(
                "write body (JSON, templated values) or payload (one template), not both"
            )
        return self


class RetryRunAction(_RunAction):
    """Put the run back to be run again (Prefect: Scheduled/AwaitingRetry)."""

    type: Literal["retry-run"]


class CancelRunAction(_RunAction):
    """Ask the orchestrator to cancel the run."""

    type: Literal["cancel-run"]


class ChangeRunStateAction(_RunAction):
    """Propose a new state for the run; ``force`` skips the orchestrator's rules."""

    type: Literal["change-run-state"]
    state: str
    name: str | None = None
    message: str | None = None
    force: bool = False

    @field_validator("state")
    @classmethod
    def _check_state(cls, value: str) -> str:
        if value.upper() not in STATE_TYPES:
            raise ValueError(f"state must be one of {', '.join(sorted(STATE_TYPES))}")
        return value.upper()

    @field_validator("name", "message")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return check_optional_template(value)


class RunDeploymentAction(_OrchestratorAction):
    """Create a run of a deployment; string parameters are templates that keep JSON types."""

    type: Literal["run-deployment"]
    # ``source: inferred`` (or no deployment given) runs the event's own deployment.
    source: Literal["selected", "inferred"] | None = None
    deployment_id: str | None = Field(default=None, min_length=1)
    deployment: str | None = Field(default=None, min_length=1)  # a name, as Prefect imports give
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] | None = None
    schedule_after: Duration = timedelta(0)

    @field_validator("deployment_id", "parameters", "job_variables")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return check_templates(value)

    @property
    def target(self) -> str:
        """The deployment template: the one given, else the event's own deployment."""
        return self.deployment_id or self.deployment or "{{ deployment.id }}"


class _AutomationAction(_Action):
    source: Literal["selected", "inferred"] | None = None  # Prefect's word; inferred = this one
    automation: str | None = Field(default=None, min_length=1)


class PauseAutomationAction(_AutomationAction):
    """Pause an automation (this one when ``automation`` is not given)."""

    type: Literal["pause-automation"]


class ResumeAutomationAction(_AutomationAction):
    """Resume a paused automation (this one when ``automation`` is not given)."""

    type: Literal["resume-automation"]


class EmitEventAction(_Action):
    """Publish an event; every string inside is a template (JSON types kept)."""

    type: Literal["emit-event"]
    event: str = Field(min_length=1)
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("event", "resource", "related", "payload")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return check_templates(value)

    @field_validator("resource")
    @classmethod
    def _needs_id(cls, value: dict[str, str]) -> dict[str, str]:
        if "resource.id" not in value:
            raise ValueError(
                "resource needs a 'resource.id', e.g. 'automation.{{ automation.name }}'"
            )
        return value


class DoNothingAction(_Action):
    """Record that the automation fired, and nothing else (Prefect's do-nothing)."""

    type: Literal["do-nothing"]


Action = Annotated[
    Union[  # noqa: UP007 (same spelling as Trigger)
        NotifyAction,
        CallWebhookAction,
        RetryRunAction,
        RunDeploymentAction,
        CancelRunAction,
        ChangeRunStateAction,
        PauseAutomationAction,
        ResumeAutomationAction,
        EmitEventAction,
        DoNothingAction,
    ],
    Field(discriminator="type"),
]
"""Every action kind, discriminated on ``type``. Add members here."""


ACTION_TYPES: dict[str, type[BaseModel]] = {
    "notify": NotifyAction,
    "call-webhook": CallWebhookAction,
    "retry-run": RetryRunAction,
    "run-deployment": RunDeploymentAction,
    "cancel-run": CancelRunAction,
    "change-run-state": ChangeRunStateAction,
    "pause-automation": PauseAutomationAction,
    "resume-automation": ResumeAutomationAction,
    "emit-event": EmitEventAction,
    "do-nothing": DoNothingAction,
}
ORCHESTRATOR_ACTIONS = frozenset({"retry-run", "run-deployment", "cancel-run", "change-run-state"})
