"""runbell automations: YAML spec and loader, matching, engine, dispatcher, service.

The composition root (``service``, ``api``, ``cli``) lives here too. Depends on
``events`` and ``notifiers``. Read CONTRACTS.md before changing it.
"""

from automations.dispatcher import Dispatcher, RetryPolicy
from automations.engine import Engine
from automations.errors import AutomationsError, ConfigError, Problem
from automations.grouping import GroupingPolicy, GroupingState
from automations.loader import load_config
from automations.loop_guard import Loop, check_loops, find_loops
from automations.matching import CompiledTrigger, compile_trigger
from automations.metrics import MetricEvaluator, MetricState
from automations.orchestrators import (
    ControlResult,
    HttpController,
    PrefectController,
    RunController,
)
from automations.replay import firing_line
from automations.settings import Settings, parse_duration
from automations.silences import SilenceSet, is_silenced, parse_cron
from automations.spec import (
    Automation,
    Channel,
    Config,
    EventTrigger,
    MetricTrigger,
    NotifyAction,
    Silence,
)
from automations.state import Firing, Intent, StateStore, firing_id

__all__ = [
    "Automation",
    "AutomationsError",
    "Channel",
    "CompiledTrigger",
    "Config",
    "ConfigError",
    "ControlResult",
    "Dispatcher",
    "Engine",
    "EventTrigger",
    "Firing",
    "GroupingPolicy",
    "GroupingState",
    "HttpController",
    "Intent",
    "Loop",
    "MetricEvaluator",
    "MetricState",
    "MetricTrigger",
    "NotifyAction",
    "PrefectController",
    "Problem",
    "RetryPolicy",
    "RunController",
    "Settings",
    "Silence",
    "SilenceSet",
    "StateStore",
    "check_loops",
    "compile_trigger",
    "find_loops",
    "firing_id",
    "firing_line",
    "is_silenced",
    "load_config",
    "parse_cron",
    "parse_duration",
]
