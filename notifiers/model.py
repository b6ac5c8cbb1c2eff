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
    """The outcome of one attempt at an effect; retryability is data, not a log line.

    The one result type of every effect: a notification, a webhook call, an
    orchestrator call, any action the dispatcher runs.
    ``target`` is always the masked description of the other side, safe to log
    and store. ``retry_after`` is the delay the target asked for (seconds), when
    it said so. ``ref`` identifies what the attempt created or found, worth
    storing with the delivery (Slack bot mode: ``{"channel": ..., "ts": ...}``,
    which ``SlackNotifier.resolve`` uses to reply in the thread and update the
    original; an orchestrator: the run and its state). It never holds a secret.
    ``created_id`` is the id of a run the attempt created (``run_deployment``),
    bare, without a ``flow-run.`` prefix.
    """

    ok: bool
    retryable: bool
    reason: str
    target: str
    latency_ms: float
    retry_after: float | None = None
    status_code: int | None = None
    ref: Mapping[str, str] | None = field(default=None, hash=False)
    created_id: str | None = None

    def __post_init__(self) -> None:
        if self.ref is not None:
            object.__setattr__(self, "ref", MappingProxyType(dict(self.ref)))

    @classmethod
    def success(
        cls,
        target: str,
        latency_ms: float,
        *,
        reason: str = "delivered",
        status_code: int | None = None,
        ref: Mapping[str, str] | None = None,
        created_id: str | None = None,
    ) -> SendResult:
        """An attempt that had its effect (or had already had it: see ``ref``)."""
        return cls(
            ok=True,
            retryable=False,
            reason=reason,
            target=target,
            latency_ms=latency_ms,
            status_code=status_code,
            ref=ref,
            created_id=created_id,
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
        ref: Mapping[str, str] | None = None,
    ) -> SendResult:
        """An attempt that did not have its effect."""
        return cls(
            ok=False,
            retryable=retryable,
            reason=reason,
            target=target,
            latency_ms=latency_ms,
            retry_after=retry_after,
            status_code=status_code,
            ref=ref,
        )

    @classmethod
    def done(
        cls,
        target: str,
        reason: str = "done",
        *,
        latency_ms: float = 0.0,
        status_code: int | None = None,
        ref: Mapping[str, str] | None = None,
        created_id: str | None = None,
    ) -> SendResult:
        """:meth:`success` for an effect that sent no request of its own (no latency)."""
        return cls.success(
            target,
            latency_ms,
            reason=reason,
            status_code=status_code,
            ref=ref,
            created_id=created_id,
        )

    @classmethod
    def failed(cls, target: str, reason: str, *, retryable: bool = False) -> SendResult:
        """A failure decided before any request: by default one retrying cannot fix
        (a bad template, bad configuration)."""
        return cls.failure(target, 0.0, reason=reason, retryable=retryable)
