"""Build the notifiers and rate limits the YAML ``channels:`` describe; close them at the end.

One notifier per channel: ``url`` → ``AppriseNotifier``, ``slack`` →
``SlackNotifier`` (webhook or bot mode), ``email`` → ``EmailNotifier``,
``webhook`` → ``WebhookNotifier``; each with the channel's ``timeout``. A
channel's ``rate_limit`` becomes a :class:`TokenBucket` on the injected clock:
the dispatcher delays sends beyond the rate (never drops them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from automations.delivery.orchestrators import HttpController, PrefectController, RequestTemplate
from automations.delivery.orchestrators.base import RunController
from automations.delivery.throttle import TokenBucket
from automations.spec import Channel, Orchestrator
from events.clock import Clock
from notifiers import AppriseNotifier, EmailNotifier, Notifier, SlackNotifier, WebhookNotifier

__all__ = [
    "Channels",
    "TokenBucket",
    "build_channels",
    "build_controllers",
    "build_notifier",
    "close_all",
]


def build_notifier(channel: Channel) -> Notifier:
    """The notifier for one channel; raises ``ChannelConfigError`` for a bad one."""
    timeout = channel.timeout.total_seconds()
    if channel.slack is not None:
        slack = channel.slack
        return SlackNotifier(
            webhook_url=slack.webhook_url,
            token=slack.token,
            channel=slack.channel,
            base_url=slack.base_url,
            timeout=timeout,
        )
    if channel.email is not None:
        email = channel.email
        return EmailNotifier(
            email.host,
            email.port,
            email.sender,
            email.recipients,
            username=email.username,
            password=email.password,
            starttls=email.starttls,
            timeout=timeout,
        )
    if channel.webhook is not None:
        hook = channel.webhook
        return WebhookNotifier(
            hook.url, method=hook.method, headers=hook.headers, secret=hook.secret, timeout=timeout
        )
    assert channel.url is not None  # Channel validates exactly one kind
    return AppriseNotifier(channel.url, timeout=timeout)


@dataclass
class Channels:
    """The notifiers and rate limits of every configured channel."""

    notifiers: dict[str, Notifier] = field(default_factory=dict)
    rate_limits: dict[str, TokenBucket] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Close every notifier that holds a connection pool."""
        await close_all(*self.notifiers.values())


def build_channels(
    channels: Mapping[str, Channel], *, notifiers: Mapping[str, Notifier] | None = None
) -> Channels:
    """Notifiers for ``channels`` (or the given ones, for tests) and their rate limits."""
    built = (
        dict(notifiers)
        if notifiers is not None
        else {name: build_notifier(channel) for name, channel in channels.items()}
    )
    limits = {
        name: TokenBucket(channel.rate_limit)
        for name, channel in channels.items()
        if channel.rate_limit is not None
    }
    return Channels(built, limits)


def build_controllers(
    orchestrators: Mapping[str, Orchestrator], *, clock: Clock | None = None
) -> dict[str, RunController]:
    """A ``RunController`` per ``orchestrators:`` entry (Prefect REST or generic HTTP)."""
    built: dict[str, RunController] = {}
    for name, spec in orchestrators.items():
        if spec.prefect is not None:
            built[name] = PrefectController(
                spec.prefect.api_url,
                api_key=spec.prefect.api_key,
                timeout=spec.prefect.timeout.total_seconds(),
                clock=clock,
            )
        elif spec.http is not None:
            options = dict(spec.http)

            def template(op: str, options: dict[str, Any] = options) -> RequestTemplate | None:
                raw = options.get(op)
                return RequestTemplate(**raw) if isinstance(raw, dict) else None

            built[name] = HttpController(
                name=str(options.get("name", name)),
                retry_run=template("retry_run"),
                run_deployment=template("run_deployment"),
                cancel_run=template("cancel_run"),
                change_run_state=template("change_run_state"),
                timeout=float(options.get("timeout", 10.0)),
                clock=clock,
            )
    return built


async def close_all(*objects: object) -> None:
    """``aclose()`` every object that has one; errors on the way out are ignored."""
    for item in objects:
        close = getattr(item, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
