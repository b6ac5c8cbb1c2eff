"""runbell automations: YAML spec and loader, matching, engine, dispatcher, service.

The composition root (``service``, ``api``, ``cli``) lives here too. Depends on
``events`` and ``notifiers``. Read CONTRACTS.md before changing it.
"""

from automations.dispatcher import Dispatcher, RetryPolicy
from automations.engine import Engine
from automations.errors import AutomationsError, ConfigError, Problem
from automations.loader import load_config
from automations.matching import CompiledTrigger, compile_trigger
from automations.settings import Settings, parse_duration
from automations.spec import Automation, Channel, Config, EventTrigger, NotifyAction
from automations.state import Firing, Intent, StateStore, firing_id

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
    "Intent",
    "NotifyAction",
    "Problem",
    "RetryPolicy",
    "Settings",
    "StateStore",
    "compile_trigger",
    "firing_id",
    "load_config",
    "parse_duration",
]
