"""Each action type, one attempt at a time: local HTTP server or the orchestrator fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from automations.delivery.actions import InvalidAction, load_action
from automations.delivery.channels import build_channels, build_controllers, close_all
from automations.delivery.dispatcher import Dispatcher, RetryPolicy
from automations.delivery.orchestrators.testing import FakeRunController
from automations.errors import ConfigError
from automations.spec import Automation, Channel, NotifyAction, RetrySpec
from automations.spec.loader import load_config
from automations.state import AttemptRow, Firing, Intent, OutboxRow, StateStore
from events.database import create_engine
from events.model import Event
from events.testing import FakeClock
from notifiers import SendResult
from tests.integration.http_receiver import HttpReceiver, Reply

EVENT: dict[str, Any] = {
    "id": "0d9f3c51-7a3e-4f4e-9d7e-1b1d3c0e8a11",
    "event": "flow-run.Failed",
    "occurred": "2026-11-21T11:36:31Z",
    "resource": {
        "resource.id": "flow-run.r1",
        "resource.name": "daft-wallaby",
        "state-message": "boom",
    },
    "related": [
        {"resource.id": "deployment.d1", "resource.role": "deployment", "resource.name": "n"},
        {"resource.id": "flow.f1", "resource.role": "flow", "resource.name": "etl"},
    ],
    "payload": {"retries": 3, "tags": ["a", "b"]},
}


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    store = StateStore(engine)
    await store.create_tables()
    yield store
    await engine.dispose()


class Harness:
    """A dispatcher with the fake orchestrator and an emit callback that records."""

    def __init__(self, state: StateStore, **controllers: FakeRunController) -> None:
        self.state = state
        self.clock = FakeClock()
        self.emitted: list[Event] = []
        self.orchestrator = FakeRunController()
        self.dispatcher = Dispatcher(
            state,
            {},
            self.clock,
            policy=RetryPolicy(max_attempts=3),
            controllers=controllers or {"prefect": self.orchestrator},
            emit=self.emit,
        )

    async def emit(self, events: Sequence[Event]) -> None:
        self.emitted.extend(events)

    async def run(self, action: dict[str, Any]) -> tuple[OutboxRow, list[AttemptRow]]:
        """Validate ``action`` as YAML would, owe it for a fresh firing, dispatch once."""
        spec = Automation.model_validate(
            {"name": "a", "trigger": {"type": "event"}, "actions": [action]}
        )
        firing = Firing(
            str(uuid4()), "a", "triggered", self.clock.now(), {}, [EVENT["id"]], {"event": EVENT}
        )
        intent = Intent(firing.id, "a", 0, spec.actions[0].model_dump(mode="json"))
        await self.state.commit_batch(
            processed=[], firings=[firing], intents=[intent], now=self.clock.now(), checkpoint=None
        )
        await self.dispatcher.dispatch_due()
        [(row, attempts)] = await self.state.deliveries(firing_id=firing.id)
        return row, attempts


@pytest.fixture
def harness(state: StateStore) -> Harness:
    return Harness(state)


async def test_call_webhook_sends_templated_json_keeping_types(
    harness: Harness, http_receiver: HttpReceiver
) -> None:
    """Body strings are templates; a lone expression keeps its JSON type; the key travels."""
    row, _ = await harness.run(
        {
            "type": "call-webhook",
            "url": http_receiver.url("/hook/{{ run.id }}"),
            "method": "PUT",
            "headers": {"X-Flow": "{{ flow.name }}"},
            "body": {
                "run": "{{ run.name }}",
                "retries": "{{ event.payload.retries }}",
                "tags": "{{ event.payload.tags }}",
                "text": "run {{ run.name }} failed",
                "fixed": 7,
            },
        }
    )
    assert row.status == "sent"
    [request] = http_receiver.requests
    assert (request.method, request.path) == ("PUT", "/hook/r1")
    assert request.headers["X-Flow"] == "etl"
    assert request.headers["Idempotency-Key"] == row.id
    assert request.json == {
        "run": "daft-wallaby",
        "retries": 3,
        "tags": ["a", "b"],
        "text": "run daft-wallaby failed",
        "fixed": 7,
    }


async def test_call_webhook_non_2xx_is_a_failure(
    harness: Harness, http_receiver: HttpReceiver
) -> None:
    """500 is retried later; 404 is dead at once; both record the status code."""
    http_receiver.always("/five", Reply(status=500, body="down"))
    http_receiver.always("/four", Reply(status=404, body="nope"))
    five, [attempt5] = await harness.run(
        {"type": "call-webhook", "url": http_receiver.url("/five")}
    )
    four, [attempt4] = await harness.run(
        {"type": "call-webhook", "url": http_receiver.url("/four")}
    )
    assert (five.status, attempt5.status_code, attempt5.retryable) == ("pending", 500, True)
    assert (four.status, attempt4.status_code, attempt4.retryable) == ("dead", 404, False)
    assert attempt4.reason == "webhook answered HTTP 404: nope"


async def test_call_webhook_honours_retry_after(
    harness: Harness, http_receiver: HttpReceiver
) -> None:
    """A 429 with Retry-After: 40 is not attempted again for 40 s."""
    http_receiver.script("/slow", Reply(status=429, headers={"Retry-After": "40"}))
    row, _ = await harness.run({"type": "call-webhook", "url": http_receiver.url("/slow")})
    assert row.next_attempt_at - harness.clock.now() >= timedelta(seconds=40)


async def test_call_webhook_times_out_retryably(
    harness: Harness, http_receiver: HttpReceiver
) -> None:
    """A server that hangs past the action's timeout is a retryable failure."""
    http_receiver.script("/hang", Reply(hang=5))
    row, [attempt] = await harness.run(
        {"type": "call-webhook", "url": http_receiver.url("/hang"), "timeout": "0.2s"}
    )
    assert row.status == "pending"
    assert attempt.reason.startswith("timed out after 0.2s")


async def test_retry_run_targets_the_events_run_with_the_outbox_key(harness: Harness) -> None:
    """retry-run defaults to the event's run and passes the outbox id as idempotency key."""
    row, _ = await harness.run({"type": "retry-run"})
    [call] = harness.orchestrator.calls
    assert (call.operation, call.subject, call.idempotency_key) == ("retry_run", "r1", row.id)
    assert row.status == "sent"


async def test_cancel_run_and_change_run_state(harness: Harness) -> None:
    """cancel-run and change-run-state reach the orchestrator with their arguments."""
    await harness.run({"type": "cancel-run", "run_id": "flow-run.other"})
    await harness.run(
        {"type": "change-run-state", "state": "failed", "message": "{{ run.name }} stuck"}
    )
    cancel, change = harness.orchestrator.calls
    assert (cancel.operation, cancel.subject) == ("cancel_run", "other")
    assert change.operation == "change_run_state"
    assert change.arguments["state_type"] == "FAILED"
    assert change.arguments["message"] == "daft-wallaby stuck"


async def test_run_deployment_keeps_parameter_types_and_names_the_new_run(
    harness: Harness,
) -> None:
    """Parameters keep JSON types; the created run is stored and named by the executed event."""
    row, _ = await harness.run(
        {
            "type": "run-deployment",
            "deployment_id": "deployment.d9",
            "parameters": {"retries": "{{ event.payload.retries }}", "who": "{{ run.name }}"},
            "schedule_after": "5m",
        }
    )
    [call] = harness.orchestrator.calls
    assert call.subject == "d9"
    assert call.arguments["parameters"] == {"retries": 3, "who": "daft-wallaby"}
    assert call.arguments["schedule_after"] == timedelta(minutes=5)
    assert row.ref is not None
    created = row.ref["flow_run_id"]
    [executed] = [e for e in harness.emitted if e.event == "automation.action.executed"]
    roles = {r["resource.role"]: r["resource.id"] for r in executed.related}
    assert roles == {
        "triggering-event": f"event.{EVENT['id']}",
        "firing": f"firing.{row.firing_id}",
        "flow-run": f"flow-run.{created}",
    }


async def test_run_deployment_infers_the_events_deployment(harness: Harness) -> None:
    """Without a deployment id the event's own deployment runs."""
    await harness.run({"type": "run-deployment"})
    assert harness.orchestrator.calls[0].subject == "d1"


async def test_orchestrator_refusal_is_recorded_once(harness: Harness) -> None:
    """A refused transition (not retryable) is dead after one attempt, with the reason."""
    harness.orchestrator.script(
        SendResult.failure("fake", 1.0, reason="ABORT: not allowed", retryable=False)
    )
    row, [attempt] = await harness.run({"type": "retry-run"})
    assert (row.status, attempt.reason) == ("dead", "ABORT: not allowed")


async def test_orchestrator_actions_need_a_configured_orchestrator(state: StateStore) -> None:
    """With two orchestrators and none named, the action fails with what to write."""
    harness = Harness(state, one=FakeRunController(), two=FakeRunController())
    row, [attempt] = await harness.run({"type": "retry-run"})
    assert row.status == "dead"
    assert "orchestrator:" in attempt.reason


async def test_pause_and_resume_automation_flip_the_flag(harness: Harness) -> None:
    """pause-automation sets the paused flag (this automation by default); resume clears it."""
    await harness.run({"type": "pause-automation"})
    await harness.run({"type": "pause-automation", "automation": "other"})
    assert await harness.state.paused() == {"a", "other"}
    await harness.run({"type": "resume-automation", "automation": "other"})
    assert await harness.state.paused() == {"a"}


async def test_emit_event_publishes_a_templated_event_once(harness: Harness) -> None:
    """emit-event renders the event; its id is stable, so a re-run publishes the same id."""
    row, _ = await harness.run(
        {
            "type": "emit-event",
            "event": "team.{{ run.name }}.noticed",
            "resource": {"resource.id": "team.data"},
            "payload": {"retries": "{{ event.payload.retries }}"},
        }
    )
    [event] = [e for e in harness.emitted if e.event.startswith("team.")]
    assert event.event == "team.daft-wallaby.noticed"
    assert event.payload == {"retries": 3}
    assert row.ref == {"event_id": str(event.id)}


async def test_do_nothing_succeeds_and_still_leaves_a_trail(harness: Harness) -> None:
    """do-nothing is sent at once and emits triggered + executed."""
    row, _ = await harness.run({"type": "do-nothing"})
    assert row.status == "sent"
    assert sorted(e.event for e in harness.emitted) == [
        "automation.action.executed",
        "automation.action.triggered",
    ]


async def test_a_bad_template_fails_only_that_action(harness: Harness) -> None:
    """A template error in a webhook body is recorded once, not retried."""
    row, [attempt] = await harness.run(
        {"type": "call-webhook", "url": "http://127.0.0.1:9/", "body": {"x": "{{ 1 / 0 }}"}}
    )
    assert row.status == "dead"
    assert attempt.reason.startswith("template: body.x: ")


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (
            {"type": "run-deployment", "parameters": {"n": "{{ evnt.payload.retries }}"}},
            "parameters.n",
        ),
        ({"type": "change-run-state", "state": "FAILED", "message": "{{ evnt }}"}, "message"),
        (
            {
                "type": "emit-event",
                "event": "x.y",
                "resource": {"resource.id": "x.1"},
                "payload": {"a": ["{{ evnt }}"]},
            },
            "payload.a[0]",
        ),
        ({"type": "retry-run", "run_id": "{{ evnt.id }}"}, "run_id"),
    ],
)
async def test_a_typo_in_a_template_fails_the_action_naming_the_field(
    harness: Harness, action: dict[str, Any], field: str
) -> None:
    """Every action renders JSON templates by one rule: an unknown name is an error
    (never a silent null) and the reason names the field."""
    row, [attempt] = await harness.run(action)
    assert row.status == "dead"
    assert attempt.reason.startswith(f"template: {field}: ")
    assert "evnt" in attempt.reason


CHANNELS_YAML = """
channels:
  hook: {webhook: {url: "https://hooks.example/x", secret: "${SIGNING}"}, rate_limit: 30/m}
  bot: {slack: {token: "${SLACK_TOKEN}", channel: C123, base_url: "http://127.0.0.1:9/api"}}
  mail:
    email: {host: 127.0.0.1, port: 2525, sender: a@example.com, recipients: ops@example.com}
    timeout: 3s
orchestrators:
  prefect: {prefect: {api_url: "http://127.0.0.1:4200/api"}}
automations:
  - name: a
    trigger: {type: event, expect: ["flow-run.Failed"]}
    actions:
      - {type: notify, channel: bot, fallback: mail, retry: {max_attempts: 2, backoff: 5s}}
      - {type: do-nothing}
"""


async def test_channels_and_orchestrators_build_from_yaml(tmp_path: Path) -> None:
    """Each channel kind builds its notifier (secrets masked), rate limits and orchestrators."""
    path = tmp_path / "a.yaml"
    path.write_text(CHANNELS_YAML)
    config = load_config([path], {"SIGNING": "sig-secret-1", "SLACK_TOKEN": "xoxb-secret-2"})
    built = build_channels(config.channels)
    try:
        kinds = {name: type(n).__name__ for name, n in built.notifiers.items()}
        assert kinds == {"hook": "WebhookNotifier", "bot": "SlackNotifier", "mail": "EmailNotifier"}
        assert set(built.rate_limits) == {"hook"}
        assert "xoxb-secret-2" not in built.notifiers["bot"].target
        assert {"sig-secret-1", "xoxb-secret-2", "https://hooks.example/x"} <= config.secrets()
        controllers = build_controllers(config.orchestrators)
        assert list(controllers) == ["prefect"]
        await close_all(*controllers.values())
    finally:
        await built.aclose()


def test_a_stored_action_loads_back_as_the_configured_one_parsed_once(tmp_path: Path) -> None:
    """The outbox stores an action's JSON (the engine's model_dump); the dispatcher's
    typed action is equal to the configured model, parsed once per distinct JSON."""
    path = tmp_path / "a.yaml"
    path.write_text(CHANNELS_YAML)
    config = load_config([path], {"SIGNING": "sig-secret-1", "SLACK_TOKEN": "xoxb-secret-2"})
    for action in config.automations[0].actions:
        stored = action.model_dump(mode="json")
        loaded = load_action(stored)
        assert loaded == action
        assert load_action(dict(reversed(stored.items()))) is loaded
    notify = load_action(config.automations[0].actions[0].model_dump(mode="json"))
    assert isinstance(notify, NotifyAction) and notify.retry is not None
    policy = RetryPolicy(max_age=timedelta(hours=1)).for_action(notify.retry)
    assert (policy.max_attempts, policy.base_delay) == (2, timedelta(seconds=5))
    # Stored in full, but a field the YAML left out stays unset: the dispatcher's.
    assert policy.max_age == timedelta(hours=1)
    partial = RetrySpec.model_validate({"max_attempts": 2})
    assert RetryPolicy(max_age=timedelta(hours=1)).for_action(partial).max_age == timedelta(hours=1)
    broken = load_action({"type": "notify"})
    assert isinstance(broken, InvalidAction) and broken.type == "notify"
    assert "channel" in broken.reason


async def test_unknown_fallback_channel_is_a_load_error(tmp_path: Path) -> None:
    """A fallback naming no channel is reported with its key path."""
    path = tmp_path / "a.yaml"
    path.write_text(CHANNELS_YAML.replace("fallback: mail", "fallback: mial"))
    with pytest.raises(ConfigError, match=r"actions\[0\]\.fallback: unknown channel 'mial'"):
        load_config([path], {"SIGNING": "sig-secret-1", "SLACK_TOKEN": "xoxb-secret-2"})


def test_a_channel_needs_exactly_one_kind() -> None:
    """url and slack together (or neither) is rejected with what to write."""
    with pytest.raises(ValueError, match="exactly one of url"):
        Channel.model_validate({"url": "json://x", "slack": {"webhook_url": "https://h"}})
    with pytest.raises(ValueError, match="rate_limit must look like"):
        Channel.model_validate({"url": "json://x", "rate_limit": "fast"})
