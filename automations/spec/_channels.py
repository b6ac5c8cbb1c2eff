"""Where messages and run actions go: ``channels:`` and ``orchestrators:`` entries."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from automations.spec._base import UNIT_SECONDS, Duration, Names, Strict

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$")


class RateLimit(Strict):
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
            amount = float(found[2] or 1) * UNIT_SECONDS[found[3]]
            return {"count": int(found[1]), "per": timedelta(seconds=amount)}
        return value


class SlackChannel(Strict):
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


class EmailChannel(Strict):
    """Email over SMTP; ``password`` is a secret (write it as ``${VAR}``)."""

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(min_length=1)
    recipients: Names = Field(min_length=1)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    starttls: bool = False


class WebhookChannel(Strict):
    """A generic JSON webhook, signed when ``secret`` is set; URL and headers are secrets."""

    url: str = Field(min_length=1, repr=False)
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    secret: str | None = Field(default=None, repr=False)


class Channel(Strict):
    """A notification target: exactly one of ``url`` (Apprise), ``slack``, ``email``, ``webhook``.

    ``rate_limit`` ('30/m') delays sends beyond the rate, never drops them;
    ``timeout`` bounds one send. Every credential is treated as a secret.
    """

    url: str | None = Field(default=None, min_length=1, repr=False)
    slack: SlackChannel | None = None
    email: EmailChannel | None = None
    webhook: WebhookChannel | None = None
    rate_limit: RateLimit | None = None
    timeout: Duration = timedelta(seconds=10)

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _parse_rate(cls, value: Any) -> Any:
        return RateLimit.coerce(value)

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


class PrefectOrchestrator(Strict):
    """Prefect's REST API: ``api_url`` such as ``http://127.0.0.1:4200/api``."""

    api_url: str = Field(min_length=1)
    api_key: str | None = Field(default=None, repr=False)
    timeout: Duration = timedelta(seconds=10)


class Orchestrator(Strict):
    """Where orchestrator actions go: ``prefect`` or ``http`` (templated requests)."""

    prefect: PrefectOrchestrator | None = None
    http: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Orchestrator:
        if (self.prefect is None) == (self.http is None):
            raise ValueError("an orchestrator needs exactly one of prefect or http")
        return self
