"""In-memory ``Notifier`` for unit tests of code that sends notifications."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from notifiers.model import Message, SendResult

__all__ = ["RecordingNotifier", "SentMessage"]


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One ``send`` call as the fake saw it."""

    message: Message
    idempotency_key: str


class RecordingNotifier:
    """Records every message; answers with scripted results, then success.

    ``script(...)`` queues ``SendResult``s consumed one per ``send``;
    ``fail(...)`` queues a failure without building one by hand.
    """

    def __init__(self, target: str = "recording://test") -> None:
        self._target = target
        self._script: deque[SendResult] = deque()
        self.sent: list[SentMessage] = []

    @property
    def target(self) -> str:
        """The (already harmless) target name given at construction."""
        return self._target

    @property
    def messages(self) -> list[Message]:
        """Messages sent so far, in order."""
        return [s.message for s in self.sent]

    def script(self, *results: SendResult) -> None:
        """Queue results for the next ``send`` calls, in order."""
        self._script.extend(results)

    def fail(
        self,
        reason: str = "scripted failure",
        *,
        retryable: bool = True,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Queue one failed result."""
        self.script(
            SendResult.failure(
                self._target,
                0.0,
                reason=reason,
                retryable=retryable,
                status_code=status_code,
                retry_after=retry_after,
            )
        )

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        """Record the call and return the next scripted result (success by default)."""
        self.sent.append(SentMessage(message, idempotency_key))
        if self._script:
            return self._script.popleft()
        return SendResult.success(self._target, 0.0)
