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
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
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
        if value.strip().upper().startswith(("P", "-P")):
            return value  # ISO 8601, as model_dump(mode="json") writes it: pydantic parses it
        raise ValueError("within must be a duration such as 90, '90s', '30m', '26h' or '1d'")
    return value


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$")


class RateLimit(_Strict):
    """At most ``count`` sends per ``per``, as a token bucket (bursts up to ``count``)."""

    count: int = Field(ge=1)
    per: timedelta

    @classmethod
    def coerce(cls, value: Any) -> Any:
        if isinstance(value, str):
            found = _RATE.match(value)
            if not found:
                raise ValueError(
                    "rate_limit must look like '30/m', '5/s' or '100/10m' (sends per duration)"
                )
            amount = float(found[2] or 1) * _UNIT_SECONDS[found[3]]
            return {"count": int(found[1]), "per": timedelta(seconds=amount)}
        return value


class SlackChannel(_Strict):
    """Slack: ``webhook_url`` (incoming webhook) or ``token`` + ``channel`` (bot)."""

    webhook_url: str | None = Field(default=None, min_length=1, repr=False)
    token: str | None = Field(default=None, min_length=1, repr=False)
    channel: str | None = Field(default=None, min_length=1)
    base_url: str = Field(default="https://slack.com/api", min_length=1)

    @model_validator(mode="after")
    def _one_mode(self) -> SlackChannel:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("slack needs exactly one of webhook_url or token (with channel)")
        if self.token is not None and not self.channel:
            raise ValueError("slack bot mode needs a channel; add channel: '#alerts' or an id")
        return self


class EmailChannel(_Strict):
    """Email over SMTP; ``password`` is a secret (write it as ``${VAR}``)."""

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(min_length=1)
    recipients: list[str] = Field(min_length=1)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    starttls: bool = False

    @field_validator("recipients", mode="before")
    @classmethod
    def _coerce_recipients(cls, value: Any) -> Any:
        return _as_list(value)


class WebhookChannel(_Strict):
    """A generic JSON webhook, signed when ``secret`` is set; URL and headers are secrets."""

    url: str = Field(min_length=1, repr=False)
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    secret: str | None = Field(default=None, repr=False)


class Channel(_Strict):
    """A notification target: exactly one of ``url`` (Apprise), ``slack``, ``email``, ``webhook``.

    ``rate_limit`` ('30/m') delays sends beyond the rate, never drops them;
    ``timeout`` bounds one send. Every credential is treated as a secret.
    """

    url: str | None = Field(default=None, min_length=1, repr=False)
    slack: SlackChannel | None = None
    email: EmailChannel | None = None
    webhook: WebhookChannel | None = None
    rate_limit: RateLimit | None = None
    timeout: timedelta = timedelta(seconds=10)

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _parse_rate(cls, value: Any) -> Any:
        return RateLimit.coerce(value)

    @field_validator("timeout", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> Any:
        return _parse_duration(value)

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("timeout must be positive, e.g. '10s'")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Channel:
        kinds = [k for k in ("url", "slack", "email", "webhook") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a channel needs exactly one of url (Apprise), slack, email or webhook"
                + (f"; found {', '.join(kinds)}" if kinds else "")
            )
        return self

    @property
    def kind(self) -> str:
        """``apprise``, ``slack``, ``email`` or ``webhook``."""
        for kind in ("slack", "email", "webhook"):
            if getattr(self, kind) is not None:
                return kind
        return "apprise"

    def secrets(self) -> set[str]:
        """Every credential of this channel (URLs, tokens, passwords, header values)."""
        found = {self.url} if self.url else set()
        if self.slack is not None:
            found |= {v for v in (self.slack.webhook_url, self.slack.token) if v}
        if self.email is not None and self.email.password:
            found.add(self.email.password)
        if self.webhook is not None:
            found |= {self.webhook.url, *self.webhook.headers.values()}
            if self.webhook.secret:
                found.add(self.webhook.secret)
        return found


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


def _check_template(value: str) -> str:
    try:
        _TEMPLATES.parse(value)
    except TemplateSyntaxError as exc:
        raise ValueError(
            f"template syntax error on template line {exc.lineno}: {exc.message}; "
            "fix the Jinja expression (e.g. '{{ event.resource[\"resource.name\"] }}')"
        ) from None
    return value


def _check_templates(value: Any) -> Any:
    """Every string inside a JSON value (dict values, list items) must parse as a template."""
    if isinstance(value, str):
        _check_template(value)
    elif isinstance(value, dict):
        for item in value.values():
            _check_templates(item)
    elif isinstance(value, list):
        for item in value:
            _check_templates(item)
    return value


class RetrySpec(_Strict):
    """Per-action delivery policy: exponential backoff from ``backoff`` (doubling, full
    jitter, capped at 5 min), at most ``max_attempts`` attempts, none after ``max_age``."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    max_age: timedelta = timedelta(hours=24)
    backoff: timedelta = timedelta(seconds=1)

    @field_validator("max_age", "backoff", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return _parse_duration(value)

    @field_validator("max_age", "backoff")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. '2s' or '1h'")
        return value


class _Action(_Strict):
    retry: RetrySpec | None = None


GROUP_WAIT = timedelta(seconds=30)
GROUP_INTERVAL = timedelta(minutes=5)
REPEAT_INTERVAL = timedelta(hours=4)


class NotifyAction(_Action):
    """Send a message to a named channel; ``subject``/``body`` are sandboxed Jinja templates.

    Without subject/body the default message for the event family is sent.
    ``fallback`` names a channel that gets the message once this one is dead-lettered.

    ``group_by`` (label names, ``["..."]`` for every label) turns on Alertmanager-style
    grouping (``automations/grouping_stage.py``): firings become alerts in groups of
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
        return None if value is None else _check_template(value)

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
            return _parse_duration(value)
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
        return _check_template(value)


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
    timeout: timedelta = timedelta(seconds=10)

    @field_validator("url", "headers", "body", "payload")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return _check_templates(value)

    @model_validator(mode="after")
    def _one_body(self) -> CallWebhookAction:
        if self.body is not None and self.payload is not None:
            raise ValueError(
                "write body (JSON, templated values) or payload (one template), not both"
            )
        return self

    @field_validator("timeout", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> Any:
        return _parse_duration(value)


class RetryRunAction(_RunAction):
    """Put the run back to be run again (Prefect: Scheduled/AwaitingRetry)."""

    type: Literal["retry-run"]


class CancelRunAction(_RunAction):
    """Ask the orchestrator to cancel the run."""

    type: Literal["cancel-run"]


_STATE_TYPES = frozenset(
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
        if value.upper() not in _STATE_TYPES:
            raise ValueError(f"state must be one of {', '.join(sorted(_STATE_TYPES))}")
        return value.upper()

    @field_validator("name", "message")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return None if value is None else _check_template(value)


class RunDeploymentAction(_OrchestratorAction):
    """Create a run of a deployment; string parameters are templates that keep JSON types."""

    type: Literal["run-deployment"]
    # ``source: inferred`` (or no deployment given) runs the event's own deployment.
    source: Literal["selected", "inferred"] | None = None
    deployment_id: str | None = Field(default=None, min_length=1)
    deployment: str | None = Field(default=None, min_length=1)  # a name, as Prefect imports give
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] | None = None
    schedule_after: timedelta = timedelta(0)

    @field_validator("deployment_id", "parameters", "job_variables")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return _check_templates(value)

    @field_validator("schedule_after", mode="before")
    @classmethod
    def _parse_after(cls, value: Any) -> Any:
        return _parse_duration(value)

    @property
    def target(self) -> str:
        """The deployment template: the one given, else the event's own deployment."""
        return self.deployment_id or self.deployment or "{{ deployment.id }}"


class PauseAutomationAction(_Action):
    """Pause an automation (this one when ``automation`` is not given)."""

    type: Literal["pause-automation"]
    source: Literal["selected", "inferred"] | None = None  # Prefect's word; inferred = this one
    automation: str | None = Field(default=None, min_length=1)


class ResumeAutomationAction(_Action):
    """Resume a paused automation (this one when ``automation`` is not given)."""

    type: Literal["resume-automation"]
    source: Literal["selected", "inferred"] | None = None  # Prefect's word; inferred = this one
    automation: str | None = Field(default=None, min_length=1)


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
        return _check_templates(value)

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


METRIC_MIN = timedelta(seconds=300)


class MetricQuery(_Strict):
    """Prefect Cloud's ``MetricTriggerQuery``: ``name operator threshold`` over ``range``.

    ``successes`` is a fraction (0.9 = 90 %); ``duration`` and ``lateness`` are
    seconds. ``range`` and ``firing_for`` default to, and may not go below, 300 s
    (Prefect's limits).
    """

    name: Literal["successes", "duration", "lateness"]
    operator: Literal["<", "<=", ">", ">="]
    threshold: float
    range: timedelta = Field(default=METRIC_MIN)
    firing_for: timedelta = Field(default=METRIC_MIN)

    @field_validator("range", "firing_for", mode="before")
    @classmethod
    def _parse_range(cls, value: Any) -> Any:
        return _parse_duration(value)

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


class MetricTrigger(_Strict):
    """Prefect Cloud's metric trigger: fires when ``metric`` breaches for ``firing_for``.

    ``match``/``match_related`` pick the flow runs that count; ``for_each`` (runbell)
    keeps one metric per label value, e.g. per deployment.
    """

    type: Literal["metric"]
    posture: Literal["Metric"] = "Metric"
    match: LabelSpec = Field(default_factory=dict)
    match_related: list[LabelSpec] = Field(default_factory=list)
    for_each: list[str] = Field(default_factory=list)
    metric: MetricQuery

    @field_validator("match", mode="before")
    @classmethod
    def _coerce_match(cls, value: Any) -> Any:
        return _label_spec(value)

    @field_validator("match_related", mode="before")
    @classmethod
    def _coerce_match_related(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [_label_spec(value)]
        if isinstance(value, list):
            return [_label_spec(item) for item in value]
        return value

    @field_validator("for_each", mode="before")
    @classmethod
    def _coerce_names(cls, value: Any) -> Any:
        return _as_list(value)


Trigger = Annotated[
    Union[EventTrigger, MetricTrigger, CompoundTrigger, SequenceTrigger],  # noqa: UP007 (recursive alias)
    Field(discriminator="type"),
]
"""Every trigger kind, discriminated on ``type``. Add members here."""

_CompositeTrigger.model_rebuild()
CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()

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

TRIGGER_TYPES: dict[str, type[BaseModel]] = {
    "event": EventTrigger,
    "metric": MetricTrigger,
    "compound": CompoundTrigger,
    "sequence": SequenceTrigger,
}
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


class PrefectOrchestrator(_Strict):
    """Prefect's REST API: ``api_url`` such as ``http://127.0.0.1:4200/api``."""

    api_url: str = Field(min_length=1)
    api_key: str | None = Field(default=None, repr=False)
    timeout: timedelta = timedelta(seconds=10)

    @field_validator("timeout", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> Any:
        return _parse_duration(value)


class Orchestrator(_Strict):
    """Where orchestrator actions go: ``prefect`` or ``http`` (templated requests)."""

    prefect: PrefectOrchestrator | None = None
    http: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Orchestrator:
        if (self.prefect is None) == (self.http is None):
            raise ValueError("an orchestrator needs exactly one of prefect or http")
        return self


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SILENCE_DURATION = timedelta(days=7)
_CLOCK_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}; write an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
    return value


class WeeklyWindow(_Strict):
    """Every ``days`` from ``start`` to ``end`` (``HH:MM`` wall time in ``timezone``).

    ``end`` at or before ``start`` ends on the next day (``22:00`` to ``06:00``); equal
    times mean 24 hours.
    """

    days: list[Weekday] = Field(min_length=1)
    start: str
    end: str
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _coerce_days(cls, value: Any) -> Any:
        value = _as_list(value)
        if isinstance(value, list):
            return [day.lower()[:3] if isinstance(day, str) else day for day in value]
        return value

    @field_validator("start", "end")
    @classmethod
    def _check_clock(cls, value: str) -> str:
        if not _CLOCK_TIME.match(value):
            raise ValueError("must be a wall-clock time 'HH:MM' such as '22:00'; quote it")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return _check_timezone(value)


class Silence(_Strict):
    """Mutes the actions of firings whose labels match ``matchers`` while it is active.

    Active between ``starts`` and ``ends`` (one-off); or, when ``weekly`` or
    ``cron`` + ``duration`` is given, during each recurring window (``starts``/
    ``ends`` then optionally bound the recurrence). See :mod:`automations.silences`.
    """

    name: str = Field(min_length=1)
    comment: str = ""
    matchers: LabelSpec = Field(min_length=1)
    starts: datetime | None = None
    ends: datetime | None = None
    weekly: list[WeeklyWindow] = Field(default_factory=list)
    cron: str | None = None
    duration: timedelta | None = None
    timezone: str = "UTC"

    @field_validator("matchers", mode="before")
    @classmethod
    def _coerce_matchers(cls, value: Any) -> Any:
        return _label_spec(value)

    @field_validator("starts", "ends")
    @classmethod
    def _check_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("needs a UTC offset; write e.g. '2025-06-01T22:00:00+02:00' or '...Z'")
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _parse_length(cls, value: Any) -> Any:
        return _parse_duration(value)

    @field_validator("duration")
    @classmethod
    def _check_length(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(0) < value <= MAX_SILENCE_DURATION:
            raise ValueError("must be positive and at most 7d; write e.g. '2h'")
        return value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from automations.silences import parse_cron  # lazy: silences imports spec

            parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="after")
    def _check_schedule(self) -> Silence:
        if self.weekly and self.cron is not None:
            raise ValueError("a silence takes either weekly or cron, not both; split it in two")
        if (self.cron is None) != (self.duration is None):
            raise ValueError(
                "cron and duration go together: write e.g. cron: '0 2 * * *', duration: 2h"
            )
        if not self.weekly and self.cron is None and (self.starts is None or self.ends is None):
            raise ValueError(
                "a one-off silence needs starts and ends (ISO 8601); "
                "for a recurring one write weekly: or cron: with duration:"
            )
        if self.starts is not None and self.ends is not None and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


class Automation(_Strict):
    """A named trigger (or several) and the actions it fires (and runs again when it resolves).

    Exactly one of ``trigger`` and ``triggers`` (a list: the automation fires when any
    of them fires, each with its own state); :meth:`roots` gives both shapes as
    (path, trigger) pairs. ``cooldown``: after a triggered firing, further triggered
    firings of the same bucket within this time record but do not act.
    """

    name: str = Field(min_length=1)
    description: str = ""
    enabled: bool = True
    trigger: Trigger | None = None
    triggers: list[Trigger] | None = Field(default=None, min_length=1)
    cooldown: timedelta = timedelta(0)
    actions: list[Action] = Field(min_length=1)
    actions_on_resolve: list[Action] = Field(default_factory=list)

    @field_validator("cooldown", mode="before")
    @classmethod
    def _parse_cooldown(cls, value: Any) -> Any:
        return _parse_duration(value)

    @field_validator("cooldown")
    @classmethod
    def _check_cooldown(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("cooldown must not be negative; write 0 or e.g. '10m'")
        return value

    @model_validator(mode="after")
    def _one_trigger_shape(self) -> Automation:
        if (self.trigger is None) == (self.triggers is None):
            raise ValueError(
                "write exactly one of 'trigger:' (one trigger) or 'triggers:' (a list of them)"
            )
        return self

    def roots(self) -> list[tuple[str, Trigger]]:
        """The top-level triggers with their state paths: ``trigger`` or ``triggers[i]``."""
        if self.triggers is not None:
            return [(f"triggers[{index}]", t) for index, t in enumerate(self.triggers)]
        assert self.trigger is not None  # guaranteed by _one_trigger_shape
        return [("trigger", self.trigger)]


class Config(_Strict):
    """Everything loaded from one or more automation files, merged."""

    channels: dict[str, Channel] = Field(default_factory=dict)
    orchestrators: dict[str, Orchestrator] = Field(default_factory=dict)
    automations: list[Automation] = Field(default_factory=list)
    silences: list[Silence] = Field(default_factory=list)

    _secrets: frozenset[str] = PrivateAttr(default=frozenset())

    def secrets(self) -> frozenset[str]:
        """Every value that must never be logged: resolved ``${VAR}`` values and channel URLs."""
        urls = {secret for channel in self.channels.values() for secret in channel.secrets()}
        keys = {o.prefect.api_key for o in self.orchestrators.values() if o.prefect}
        return self._secrets | urls | {key for key in keys if key}

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
