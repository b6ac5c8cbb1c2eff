"""The ``runbell`` command line (Typer)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import typer

from automations.service.settings import Settings
from automations.service.wiring import config_secrets, load_or_exit
from automations.spec import Automation
from automations.state import Firing
from events.clock import SystemClock
from notifiers import HttpClient, Reply

app = typer.Typer(add_completion=False, no_args_is_help=True, help="runbell: automations for runs")

ConfigOption = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="Automations YAML (repeatable); default $RUNBELL_CONFIG"),
]
LOG_LEVELS = ("debug", "info", "warning", "error")
LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar="RUNBELL_LOG_LEVEL",
        help=f"Least severe log lines shown: {', '.join(LOG_LEVELS)}",
    ),
]


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"runbell {version('runbell')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    """runbell: automations for runs."""


def _log_level(level: str) -> str:
    if level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{level!r}: write one of {', '.join(LOG_LEVELS)}")
    return level.lower()


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8900,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines")] = False,
    log_level: LogLevelOption = "info",
) -> None:
    """Run the API, engine and dispatcher (embedded default unless RUNBELL_BUS is set)."""
    import uvicorn

    from automations.service import Service
    from automations.service.api import create_app
    from notifiers import Redactor, configure_logging

    settings = Settings.from_env(config_paths=tuple(config) if config else None)
    loaded = load_or_exit(list(settings.config_paths), settings.env, exit_code=2)
    redactor = Redactor(config_secrets(loaded))
    level = _log_level(log_level)
    token = settings.api_token
    if token is None:
        token = secrets.token_urlsafe(32)
        typer.echo(f"runbell: no RUNBELL_API_TOKEN set; this run's API token is: {token}", err=True)
    redactor.add(token)
    configure_logging(redactor, json=log_json, level=level)
    delivery = None
    if settings.delivery == "process":  # automations/service/worker.py
        delivery = [sys.executable, "-m", "automations.service.worker"]  # `runbell deliver`
        delivery += [arg for path in settings.config_paths for arg in ("--config", str(path))]
        delivery += ["--log-json"] if log_json else []
        delivery += ["--log-level", level]
    service = Service(settings, loaded, delivery_argv=delivery)
    whose = "RUNBELL_API_TOKEN" if settings.api_token else "the one printed above"
    typer.echo(
        f"runbell: serving on http://{host}:{port} (API token: {whose}; Ctrl-C stops)", err=True
    )
    uvicorn.run(
        create_app(service, token), host=host, port=port, log_level="warning", access_log=False
    )


@app.command()
def deliver(
    config: ConfigOption = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines")] = False,
    log_level: LogLevelOption = "info",
) -> None:
    """Run a delivery worker on the database of a `runbell serve` (its own process)."""
    from automations.service.worker import main as run_worker

    args = [arg for path in config or () for arg in ("--config", str(path))]
    args += ["--log-level", _log_level(log_level)]
    raise typer.Exit(run_worker([*args, *(["--log-json"] if log_json else [])]))


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Automations YAML files")]) -> None:
    """Check automation files; print every problem and exit 1 if there is any."""
    config = load_or_exit(files, os.environ, exit_code=1)
    typer.echo(f"ok: {len(config.automations)} automation(s), {len(config.channels)} channel(s)")


@app.command()
def emit(
    event: Annotated[str | None, typer.Option(help="Event name, e.g. flow-run.Failed")] = None,
    resource_id: Annotated[str | None, typer.Option(help="resource.id label")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Resource label KEY=VALUE")] = None,
    related: Annotated[
        list[str] | None, typer.Option(help="Related resource ROLE=RESOURCE_ID[,KEY=VALUE...]")
    ] = None,
    payload: Annotated[str | None, typer.Option(help="Payload as a JSON object")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="JSON file: an event or a list")
    ] = None,
    url: Annotated[str, typer.Option(envvar="RUNBELL_URL")] = "http://127.0.0.1:8900",
    token: Annotated[str | None, typer.Option(envvar="RUNBELL_API_TOKEN")] = None,
) -> None:
    """Send an event (from flags or a JSON file) to a running runbell."""
    if file is not None:
        body: Any = json.loads(file.read_text())
    elif event and resource_id:
        body = _event_from_flags(event, resource_id, label or [], related or [], payload)
    else:
        raise typer.BadParameter("give --file, or --event and --resource-id")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = asyncio.run(_post(f"{url}/api/events", body, headers))
    if reply.result.status_code is None:  # no answer came
        typer.echo(f"runbell emit: cannot reach {url}: {reply.result.reason}", err=True)
        raise typer.Exit(2)
    text = reply.body.decode(errors="replace")
    if reply.result.status_code != 202:
        typer.echo(f"runbell emit: {reply.result.status_code} {text}", err=True)
        if reply.result.status_code == 401:
            typer.echo(_UNAUTHORISED_HINT, err=True)
        raise typer.Exit(1)
    typer.echo(text)


_UNAUTHORISED_HINT = (
    "runbell emit: the API wants its token: set RUNBELL_API_TOKEN (or pass --token) to the "
    "value `runbell serve` was started with, or to the one it printed when none was set"
)


async def _post(url: str, body: Any, headers: dict[str, str]) -> Reply:
    """One POST through the one outbound client (``notifiers.HttpClient``)."""
    client = HttpClient(timeout=30)
    try:
        return await client.request(
            "POST", url, target=url, what="runbell", json=body, headers=headers
        )
    finally:
        await client.aclose()


def _event_from_flags(
    name: str, resource_id: str, labels: list[str], related: list[str], payload: str | None
) -> dict[str, Any]:
    resource = {"resource.id": resource_id, **dict(_pair(item) for item in labels)}
    related_out = []
    for item in related:
        head, *rest = item.split(",")
        role, rid = _pair(head)
        related_out.append(
            {"resource.role": role, "resource.id": rid, **dict(_pair(x) for x in rest)}
        )
    return {
        "id": str(uuid4()),
        "occurred": SystemClock().now().isoformat(),
        "event": name,
        "resource": resource,
        "related": related_out,
        "payload": json.loads(payload) if payload else {},
    }


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise typer.BadParameter(f"{text!r}: write KEY=VALUE")
    return key, value


import_app = typer.Typer(help="Import automations from other tools", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("prefect")
def import_prefect(
    file: Annotated[Path, typer.Argument(help="Prefect automation YAML/JSON, or a prefect.yaml")],
    scope_deployments: Annotated[
        bool,
        typer.Option(help="Limit deployment triggers to events related to their deployment"),
    ] = False,
) -> None:
    """Print runbell YAML for Prefect automations; what differs is reported on stderr."""
    from automations.prefect_import import PrefectImportError, convert

    try:
        result = convert(
            file.read_text(), source=str(file), scope_deployment_triggers=scope_deployments
        )
    except (OSError, PrefectImportError) as exc:
        typer.echo(f"runbell import prefect: {exc}", err=True)
        raise typer.Exit(1) from None
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(result.yaml, nl=False)


@app.command("test")
def replay_events(
    automations: Annotated[list[Path], typer.Argument(help="Automations YAML files")],
    events: Annotated[Path, typer.Option("--events", help="Events, one JSON object per line")],
    start: Annotated[
        datetime | None, typer.Option(help="When the automations start (default: first arrival)")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Run the clock on to here so deadlines fire")
    ] = None,
) -> None:
    """Replay events through the real engine in virtual time; one JSON line per firing,
    with why its actions were muted (paused, silence:<name>, cooldown) and what each
    action would send (a notify's rendered subject and body)."""
    from automations.engine.replay import firing_line, replay
    from events.model import Event
    from notifiers import Redactor, configure_logging

    config = load_or_exit(automations, os.environ, exit_code=2)
    configure_logging(
        Redactor(config_secrets(config)), json=False, stream=sys.stderr, level="warning"
    )
    parsed: list[Event] = []
    for number, line in enumerate(events.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append(Event.model_validate_json(line))
        except ValueError as exc:
            typer.echo(f"{events}:{number}: not a valid event: {exc}", err=True)
            raise typer.Exit(2) from None
    firings = asyncio.run(replay(config, parsed, start=_aware(start), until=_aware(until)))
    automations_by_name = {a.name: a for a in config.automations}
    for firing in firings:
        found = firing_line(firing)
        found["muted"] = firing.context.get("muted")
        found["actions"] = _dry_run(automations_by_name[firing.automation], firing)
        typer.echo(json.dumps(found))


def _dry_run(automation: Automation, firing: Firing) -> list[dict[str, Any]]:
    """What each of the firing's actions would do: a notify's message as it would be
    sent (the default message, and why, when its template fails); the other actions
    as configured."""
    from automations.delivery.actions.context import template_context
    from automations.delivery.actions.notify import render_or_default
    from automations.spec import NotifyAction

    resolved = firing.state == "resolved"
    context = template_context(firing)
    out: list[dict[str, Any]] = []
    for action in automation.actions_on_resolve if resolved else automation.actions:
        entry: dict[str, Any] = {"type": action.type}
        if isinstance(action, NotifyAction):
            # What would be sent: a template that fails or renders blank falls back to
            # the default message, and the line says why, as the attempt record would.
            rendered = render_or_default(action, context, resolved=resolved)
            entry |= {
                "channel": action.channel,
                "subject": rendered.message.subject,
                "body": rendered.message.body,
            }
            if rendered.template_failed is not None:
                entry["template_failed"] = rendered.template_failed
        else:
            entry["action"] = action.model_dump(mode="json", exclude_none=True)
        out.append(entry)
    return out


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
