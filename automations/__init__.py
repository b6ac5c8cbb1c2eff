"""runbell automations: everything that decides and acts. Depends on ``events`` and ``notifiers``.

One folder per role, each depending only on the ones listed before it:

    spec/            YAML models, loader, loop guard, label/name patterns
    core/            pure: matching, triggers, buckets, ordering, metrics, silences, grouping
    state/           tables and stores (firings, outbox, attempts, trigger state)
    engine/          the engine, candidate index, router and shards, replay
    delivery/        dispatcher, retry policy, throttle, grouping stage, actions/, orchestrators/
    prefect_import/  Prefect automation definitions -> runbell YAML
    service/         composition root: service, wiring, HTTP API, CLI, settings, delivery worker

Read CONTRACTS.md before changing it.
"""

from automations.core.grouping import GroupingPolicy, GroupingState
from automations.core.matching import CompiledTrigger, compile_trigger
from automations.core.metrics import MetricEvaluator, MetricState
from automations.core.silences import SilenceSet, is_silenced
from automations.delivery.dispatcher import Dispatcher, RetryPolicy
from automations.delivery.orchestrators import HttpController, PrefectController, RunController
from automations.engine import Engine
from automations.engine.replay import firing_line
from automations.errors import AutomationsError, ConfigError, Problem
from automations.service.settings import Settings, parse_duration
from automations.spec import (
    Automation,
    Channel,
    Config,
    EventTrigger,
    MetricTrigger,
    NotifyAction,
    Silence,
)
from automations.spec.loader import load_config
from automations.spec.loop_guard import Loop, check_loops, find_loops
from automations.state import Firing, Intent, StateStore

__all__ = [
    "Automation",
    "AutomationsError",
    "Channel",
    "CompiledTrigger",
    "Config",
    "ConfigError",
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
    "firing_line",
    "is_silenced",
    "load_config",
    "parse_duration",
]
