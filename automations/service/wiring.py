"""What the service and the delivery worker process build alike, from one config.

Kept apart from :mod:`automations.service.service` so the worker process
(:mod:`automations.service.worker`) builds its dispatcher without importing the
service, and the CLI and the worker load a config the same way.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer

from automations.delivery.actions import Emit, RunController
from automations.delivery.channels import Channels, build_channels, build_controllers
from automations.delivery.dispatcher import Dispatcher
from automations.delivery.grouping_stage import NotifyGrouping
from automations.errors import ConfigError
from automations.service.settings import Settings
from automations.spec import CallWebhookAction, Config
from automations.spec.loader import load_config
from automations.state import StateStore
from events.clock import Clock
from notifiers import Notifier, Redactor
from notifiers.secrets import register_secrets, secret_parts

__all__ = ["build_dispatcher", "config_secrets", "freeze_startup_heap", "load_or_exit"]


def config_secrets(config: Config) -> set[str]:
    """Every secret the config knows: ``Config.secrets()`` (each ``${ENV}`` value
    substituted at load, channel URLs and credentials, API keys) and what the
    ``call-webhook`` actions spell out literally: header values (``Bearer <token>``
    also as the token alone) and their URLs' secret parts (secret-named query
    parameters, passwords). Templated parts are masked per request, by value
    (``notifiers.http``)."""
    found = set(config.secrets())
    for automation in config.automations:
        for action in automation.actions:
            if not isinstance(action, CallWebhookAction):
                continue
            values = [v for v in action.headers.values() if "{" not in v]
            found.update(values, (v.partition(" ")[2] for v in values if " " in v))
            found.update(part for part in secret_parts(action.url) if "{" not in part)
    return found


def build_dispatcher(
    settings: Settings,
    config: Config,
    state: StateStore,
    clock: Clock,
    emit: Emit,
    *,
    notifiers: Mapping[str, Notifier] | None = None,
    controllers: Mapping[str, RunController] | None = None,
) -> tuple[Dispatcher, Channels, dict[str, RunController]]:
    """The dispatcher the config describes, with its channels and run controllers (for
    the service, and for the delivery worker process).

    Registers every secret of the config once, here, in both processes: with the
    process's registry (answer excerpts are scrubbed before they are cut) and with the
    dispatcher (reasons and targets, before they are logged, stored or emitted)."""
    secrets = config_secrets(config)
    register_secrets(*secrets)
    channels = build_channels(config.channels, notifiers=notifiers)
    built = (
        dict(controllers)
        if controllers is not None
        else build_controllers(config.orchestrators, clock=clock)
    )
    dispatcher = Dispatcher(
        state,
        channels.notifiers,
        clock,
        controllers=built,
        emit=emit,
        rate_limits=channels.rate_limits,
        ui_base_url=settings.ui_url,
        grouping=NotifyGrouping(
            state, channels.notifiers, config.automations, ui_base_url=settings.ui_url
        ),
        redactor=Redactor(secrets),
    )
    return dispatcher, channels, built


def freeze_startup_heap() -> None:
    """Once the service has started: what is loaded now (config, automations, caches,
    modules) lives as long as the process. Moving it out of the collector's generations
    keeps every full collection from walking it again (``gc.freeze``)."""
    gc.collect()
    gc.freeze()


def load_or_exit(paths: Sequence[Path], env: Mapping[str, str], *, exit_code: int) -> Config:
    """The merged config, or every problem on stderr and exit with ``exit_code``."""
    try:
        return load_config(paths, env)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{len(exc.problems)} problem(s) found", err=True)
        raise typer.Exit(exit_code) from None
