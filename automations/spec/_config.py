"""An automation (triggers and actions) and the whole loaded ``Config``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, PrivateAttr, field_validator, model_validator

from automations.spec._actions import Action
from automations.spec._base import Duration, Strict
from automations.spec._channels import Channel, Orchestrator
from automations.spec._silences import Silence
from automations.spec._triggers import Trigger


class Automation(Strict):
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
    cooldown: Duration = timedelta(0)
    actions: list[Action] = Field(min_length=1)
    actions_on_resolve: list[Action] = Field(default_factory=list)

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


class Config(Strict):
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
