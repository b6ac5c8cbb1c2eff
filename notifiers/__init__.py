"""Notification channels, message templates and the values that cross them.

Read ``CONTRACTS.md`` before changing anything here.
"""

from notifiers._apprise import AppriseNotifier
from notifiers.channel import Notifier, is_retryable_status
from notifiers.errors import ChannelConfigError, NotifiersError, TemplateError
from notifiers.model import Message, MessageFormat, SendResult
from notifiers.secrets import Redactor, configure_logging, mask_url
from notifiers.templates import check_syntax, render

__all__ = [
    "AppriseNotifier",
    "ChannelConfigError",
    "Message",
    "MessageFormat",
    "Notifier",
    "NotifiersError",
    "Redactor",
    "SendResult",
    "TemplateError",
    "check_syntax",
    "configure_logging",
    "is_retryable_status",
    "mask_url",
    "render",
]
