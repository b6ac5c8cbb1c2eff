"""Public surface, value objects and the RecordingNotifier fake."""

from __future__ import annotations

import pytest

import notifiers
from notifiers import Message, Notifier, SendResult, is_retryable_status
from notifiers.errors import ChannelConfigError, NotifiersError, TemplateError
from notifiers.testing import RecordingNotifier


def test_all_names_exist_and_nothing_private_is_exported() -> None:
    """__all__ is honest: every name resolves and none is private."""
    for name in notifiers.__all__:
        assert hasattr(notifiers, name), name
        assert not name.startswith("_")
    assert sorted(notifiers.__all__) == notifiers.__all__


def test_error_tree() -> None:
    """Every notifiers exception derives from NotifiersError."""
    assert issubclass(ChannelConfigError, NotifiersError)
    assert issubclass(TemplateError, NotifiersError)


def test_message_is_frozen_and_validates_format() -> None:
    """A Message cannot change after rendering and only knows three formats."""
    message = Message("s", "b", attributes={"severity": "high"})
    with pytest.raises(AttributeError):
        message.subject = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        message.attributes["severity"] = "low"  # type: ignore[index]
    with pytest.raises(ValueError, match="format"):
        Message("s", "b", format="pdf")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False), (401, False)],
)
def test_http_status_retryability(status: int, retryable: bool) -> None:
    """5xx, 429 and 408 are retryable; other 4xx are not."""
    assert is_retryable_status(status) is retryable


async def test_recording_notifier_records_and_plays_script() -> None:
    """The fake records every send and returns scripted results, then success."""
    fake = RecordingNotifier()
    assert isinstance(fake, Notifier)
    fake.fail("slack said 503", status_code=503)
    fake.script(SendResult.success(fake.target, 1.0))

    first = await fake.send(Message("a", "1"), idempotency_key="k1")
    second = await fake.send(Message("b", "2"), idempotency_key="k2")
    third = await fake.send(Message("c", "3"), idempotency_key="k3")

    assert (first.ok, first.retryable, first.status_code) == (False, True, 503)
    assert second.ok
    assert third.ok
    assert [m.subject for m in fake.messages] == ["a", "b", "c"]
    assert [s.idempotency_key for s in fake.sent] == ["k1", "k2", "k3"]
