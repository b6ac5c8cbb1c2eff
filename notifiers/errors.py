"""Errors raised by the notifiers package.

Delivery outcomes are *not* exceptions: ``Notifier.send`` returns a
``SendResult``. Exceptions are for mistakes a person must fix (a bad channel
URL, a broken template), found at load time or at render time.

    NotifiersError                 root; catch this to catch everything below
    ├── ChannelConfigError         a channel URL is unparseable or unsupported
    └── TemplateError              a template fails to compile or to render
                                   (syntax, undefined name, sandbox violation,
                                   range limit, render timeout)

Messages never contain a secret: channel errors name the URL scheme only.
"""

from __future__ import annotations

__all__ = ["ChannelConfigError", "NotifiersError", "TemplateError"]


class NotifiersError(Exception):
    """Root of every exception raised by ``notifiers``."""


class ChannelConfigError(NotifiersError):
    """A channel URL cannot be used; the message names the scheme, never the secret."""


class TemplateError(NotifiersError):
    """A template cannot be compiled or rendered; ``reason`` says why.

    ``line`` is the 1-based template line when Jinja reported one.
    """

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
