"""Notification channels, message templates and the values that cross them.

Read ``CONTRACTS.md`` before changing anything here.
"""

from notifiers._apprise import AppriseNotifier
from notifiers._email import EmailNotifier
from notifiers._slack import SlackNotifier
from notifiers._webhook import WebhookNotifier
from notifiers.channel import Notifier, is_retryable_status
from notifiers.errors import ChannelConfigError, NotifiersError, TemplateError
from notifiers.http import HttpClient, Reply, retry_after_seconds
from notifiers.messages import default_message
from notifiers.model import Message, MessageFormat, SendResult
from notifiers.secrets import Redactor, configure_logging, mask_url
from notifiers.templates import check_syntax, render, render_field, render_json

__all__ = [
    "AppriseNotifier",
    "ChannelConfigError",
    "EmailNotifier",
    "HttpClient",
    "Message",
    "MessageFormat",
    "Notifier",
    "NotifiersError",
    "Redactor",
    "Reply",
    "SendResult",
    "SlackNotifier",
    "TemplateError",
    "WebhookNotifier",
    "check_syntax",
    "configure_logging",
    "default_message",
    "is_retryable_status",
    "mask_url",
    "render",
    "render_field",
    "render_json",
    "retry_after_seconds",
]
