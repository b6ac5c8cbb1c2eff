"""The ``Notifier`` seam and the retryability rules every channel shares."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from notifiers.model import Message, SendResult

__all__ = ["Notifier", "is_retryable_status"]


@runtime_checkable
class Notifier(Protocol):
    """Delivers one rendered message to one channel, exactly one attempt.

    Contract (see ``notifiers/CONTRACTS.md``):

    * ``send`` never retries and never raises for a delivery outcome: it
      returns a ``SendResult``. 5xx, 429, timeouts and connection errors are
      ``retryable``; other 4xx and bad configuration are not. The delivery
      pipeline owns backoff, rate limits and dead letters.
    * ``idempotency_key`` is stable across retries of the same intent; a
      channel that can forward it (a header, a dedup id) does, others ignore it.
    * ``target`` is the masked channel description, safe for logs and APIs.
    """

    @property
    def target(self) -> str:
        """Masked description of where messages go."""
        ...

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        """Attempt delivery once and report the outcome."""
        ...


def is_retryable_status(status_code: int) -> bool:
    """Whether an HTTP status is worth retrying: 5xx, 429, 408 and 425 are."""
    return status_code >= 500 or status_code in (408, 425, 429)
