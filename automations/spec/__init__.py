"""The automation YAML format, as pydantic models.

Strict for what people write: every model forbids unknown keys, so a typo is an
error instead of a silent no-op. Triggers and actions are discriminated unions on
a kebab-case ``type``; a new kind is one more model added to :data:`Trigger` or
:data:`Action` (and to :data:`TRIGGER_TYPES` / :data:`ACTION_TYPES`).

One module per role: ``_triggers`` (event, compound, sequence, metric),
``_actions``, ``_channels`` (channels and orchestrators), ``_silences`` and
``_config`` (``Automation``, ``Config``); ``_base`` holds the lenient input forms
they share (``'90s'`` durations, one string for a list of one).

Loading (files, ``${VAR}`` substitution, line numbers) lives in ``loader.py``;
these models hold the already-resolved values.
"""

from automations.spec._actions import (
    ACTION_TYPES,
    GROUP_INTERVAL,
    GROUP_WAIT,
    ORCHESTRATOR_ACTIONS,
    REPEAT_INTERVAL,
    STATE_TYPES,
    Action,
    CallWebhookAction,
    CancelRunAction,
    ChangeRunStateAction,
    DoNothingAction,
    EmitEventAction,
    NotifyAction,
    PauseAutomationAction,
    ResumeAutomationAction,
    RetryRunAction,
    RetrySpec,
    RunDeploymentAction,
)
from automations.spec._base import UNIT_SECONDS, LabelSpec
from automations.spec._channels import (
    Channel,
    EmailChannel,
    Orchestrator,
    PrefectOrchestrator,
    RateLimit,
    SlackChannel,
    WebhookChannel,
)
from automations.spec._config import Automation, Config
from automations.spec._silences import (
    MAX_SILENCE_DURATION,
    WEEKDAYS,
    Silence,
    Weekday,
    WeeklyWindow,
)
from automations.spec._triggers import (
    METRIC_MIN,
    PROACTIVE_MIN_WITHIN,
    TRIGGER_TYPES,
    CompoundTrigger,
    EventTrigger,
    MetricQuery,
    MetricTrigger,
    SequenceTrigger,
    Trigger,
)

__all__ = [
    "ACTION_TYPES",
    "GROUP_INTERVAL",
    "GROUP_WAIT",
    "MAX_SILENCE_DURATION",
    "METRIC_MIN",
    "ORCHESTRATOR_ACTIONS",
    "PROACTIVE_MIN_WITHIN",
    "REPEAT_INTERVAL",
    "STATE_TYPES",
    "TRIGGER_TYPES",
    "UNIT_SECONDS",
    "WEEKDAYS",
    "Action",
    "Automation",
    "CallWebhookAction",
    "CancelRunAction",
    "ChangeRunStateAction",
    "Channel",
    "CompoundTrigger",
    "Config",
    "DoNothingAction",
    "EmailChannel",
    "EmitEventAction",
    "EventTrigger",
    "LabelSpec",
    "MetricQuery",
    "MetricTrigger",
    "NotifyAction",
    "Orchestrator",
    "PauseAutomationAction",
    "PrefectOrchestrator",
    "RateLimit",
    "ResumeAutomationAction",
    "RetryRunAction",
    "RetrySpec",
    "RunDeploymentAction",
    "SequenceTrigger",
    "Silence",
    "SlackChannel",
    "Trigger",
    "WebhookChannel",
    "Weekday",
    "WeeklyWindow",
]
