"""URL masking, the log redactor and the logging configuration."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from notifiers import Redactor, configure_logging, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://hooks.slack.com/services/T0001/B0002/***",
        ),
        (
            "https://discord.com/api/webhooks/1234567/abcdefTOKEN",
            "https://discord.com/api/webhooks/1234567/***",
        ),
        ("json://user:pa55word@127.0.0.1:8080/path", "json://user:***@127.0.0.1:8080/path"),
        (
            "https://api.example.com/v1/hook?token=abc123&name=x&api_key=k9&Secret=s",
            "https://api.example.com/v1/hook?token=***&name=x&api_key=***&Secret=***",
        ),
        (
            "https://example.com/hooks/0123456789abcdefghij0123/x",
            "https://example.com/hooks/***/x",
        ),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "slack://***/***/***"),
        ("mailto://user:pw123456@gmail.com", "mailto://user:***@gmail.com"),
        ("https://example.com/status", "https://example.com/status"),
        ("tgram://123456789:AAHbcdEFG/12345", "tgram://***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """Credentials in userinfo, webhook paths, token-like segments and secret params are masked."""
    assert mask_url(url) == masked


def test_redactor_replaces_every_occurrence_longest_first() -> None:
    """A registered URL is replaced whole, and its password alone wherever else it appears."""
    redactor = Redactor(["s3cr3t-value"])
    redactor.add_url("json://bob:pa55word99@example.com/hook")
    assert redactor.redact("url json://bob:pa55word99@example.com/hook") == "url ***"
    assert redactor.redact("pw=pa55word99 env=s3cr3t-value") == "pw=*** env=***"


def test_redactor_masks_encoded_forms_of_a_secret() -> None:
    """A target echoing a query string or JSON sends a secret encoded: masked too."""
    redactor = Redactor(['key with/slash+plus"é'])
    echoes = [
        "key%20with%2Fslash%2Bplus%22%C3%A9",  # quote(safe="")
        "key%20with/slash%2Bplus%22%C3%A9",  # quote()
        "key+with/slash%2Bplus%22%C3%A9",  # yarl's query: "+" for a space, "/" kept
        "key+with%2fslash%2bplus%22%c3%a9",  # lower-case hex
        'key with/slash+plus\\"\\u00e9',  # inside a JSON string
        'key with/slash+plus\\"é',
    ]
    for echo in echoes:
        assert redactor.redact(f"got {echo}!") == "got ***!", echo


def test_redactor_ignores_too_short_strings() -> None:
    """Strings under 4 characters are not registered: they would mangle ordinary words."""
    redactor = Redactor(["ab", ""])
    assert redactor.redact("about a cab") == "about a cab"


def test_redact_processor_scrubs_nested_values_and_keys() -> None:
    """Every value of the event, nested or not, is scrubbed."""
    redactor = Redactor(["tok-12345"])
    event = redactor.redact_processor(
        None,
        "info",
        {"event": "sent tok-12345", "nested": {"a": ["x tok-12345"]}, "n": 3, "tok-12345": 1},
    )
    assert event == {"event": "sent ***", "nested": {"a": ["x ***"]}, "n": 3, "***": 1}


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "runbell-redacting":
            root.removeHandler(handler)


def test_configured_structlog_never_prints_a_registered_secret(log_stream: io.StringIO) -> None:
    """A log line through configure_logging carries *** instead of any registered secret."""
    redactor = Redactor()
    redactor.add_url("https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX")
    redactor.add("env-secret-value")
    configure_logging(redactor, json=True, stream=log_stream)
    log = structlog.get_logger()
    log.info(
        "channel_failed",
        url="https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX",
        detail="token XXXXXXXXXXXXXXXXXXXXXXXX rejected",
    )
    try:
        raise RuntimeError("boom env-secret-value")
    except RuntimeError:
        log.exception("crashed")

    output = log_stream.getvalue()
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in output
    assert "env-secret-value" not in output
    first = json.loads(output.splitlines()[0])
    assert first["event"] == "channel_failed"
    assert first["url"] == "***"
    assert first["detail"] == "token *** rejected"


def test_stdlib_records_are_redacted_too(log_stream: io.StringIO) -> None:
    """Libraries logging through stdlib (Apprise does) go through the same redaction."""
    redactor = Redactor(["lib-secret-1234"])
    configure_logging(redactor, json=False, stream=log_stream)
    logging.getLogger("apprise").warning("failed with %s", "lib-secret-1234")
    output = log_stream.getvalue()
    assert "failed with ***" in output
    assert "lib-secret-1234" not in output
