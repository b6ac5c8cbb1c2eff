"""Values that cross the notifier seam: what to send and what happened."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

__all__ = ["Message", "MessageFormat", "SendResult"]

MessageFormat = Literal["text", "markdown", "html"]
_FORMATS: frozenset[str] = frozenset(get_args(MessageFormat))


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification: notifiers deliver it, they never template it.

    ``attributes`` carries structured extras (severity, links, ...) that a
    channel may use; channels that cannot use them ignore them.
    """

    subject: str
    body: str
    format: MessageFormat = "text"
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.format not in _FORMATS:
            raise ValueError(f"format must be one of {sorted(_FORMATS)}, not {self.format!r}")
        # Frozen all the way down: a message shared by several channels stays as rendered.
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one delivery attempt; retryability is data, not a log line.

    ``target`` is always the masked channel description, safe to log and store.
    ``retry_after`` is the delay the target asked for (seconds), when it said so.
    ``ref`` identifies what a successful send created, for channels that can
    refer back to it (Slack bot mode: ``{"channel": ..., "ts": ...}``, which
    ``SlackNotifier.resolve`` uses to reply in the thread and update the
    original). It never holds a secret; store it with the delivery.
    """

    ok: bool
    retryable: bool
    reason: str
    target: str
    latency_ms: float
    retry_after: float | None = None
    status_code: int | None = None
    ref: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.ref is not None:
            object.__setattr__(self, "ref", MappingProxyType(dict(self.ref)))

    @classmethod
    def success(
        cls,
        target: str,
        latency_ms: float,
        *,
        status_code: int | None = None,
        ref: Mapping[str, str] | None = None,
    ) -> SendResult:
        """A delivered message."""
        return cls(
            ok=True,
            retryable=False,
            reason="delivered",
            target=target,
            latency_ms=latency_ms,
            status_code=status_code,
            ref=ref,
        )

    @classmethod
    def failure(
        cls,
        target: str,
        latency_ms: float,
        *,
        reason: str,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> SendResult:
        """A message that was not delivered."""
        return cls(
            ok=False,
            retryable=retryable,
            reason=reason,
            target=target,
            latency_ms=latency_ms,
            retry_after=retry_after,
            status_code=status_code,
        )
