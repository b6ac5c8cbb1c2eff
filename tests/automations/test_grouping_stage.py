"""Grouped notifies through the real dispatcher and state database, on a fake clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from automations.delivery.dispatcher import Dispatcher
from automations.delivery.grouping_stage import NotifyGrouping
from automations.errors import ConfigError
from automations.spec import Automation, Config
from automations.spec.loader import load_config
from automations.state import Firing, Intent, StateStore
from events.database import create_engine
from events.testing import FakeClock
from notifiers.testing import RecordingNotifier

FAILURES = """
channels:
  team:
    url: json://127.0.0.1:9/hook
automations:
  - name: production-failures
    trigger:
      type: event
      posture: Reactive
      expect: ["flow-run.Failed"]
      match: {resource.id: "flow-run.*"}
    actions:
      - type: notify
        channel: team
        group_by: [deployment]
        group_wait: 1m
        group_interval: 5m
        repeat_interval: 4h
"""

RESOLVING = """
channels:
  team:
    url: json://127.0.0.1:9/hook
automations:
  - name: run-health
    trigger:
      type: event
      posture: Reactive
      expect: ["flow-run.Failed"]
      match: {resource.id: "flow-run.*"}
      for_each: [resource.id]
    actions:
      - type: notify
        channel: team
        group_by: [deployment]
        group_wait: 30s
        group_interval: 5m
    actions_on_resolve:
      - type: notify
        channel: team
        group_by: [deployment]
"""


@dataclass
class Rig:
    state: StateStore
    clock: FakeClock
    team: RecordingNotifier
    config: Config
    dispatcher: Dispatcher

    @property
    def automation(self) -> Automation:
        return self.config.automations[0]

    def restart(self) -> Dispatcher:
        """A new dispatcher and grouping stage on the same database."""
        grouping = NotifyGrouping(self.state, {"team": self.team}, self.config.automations)
        return Dispatcher(self.state, {"team": self.team}, self.clock, grouping=grouping)


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "automations.yaml"
    path.write_text(text)
    return load_config([path], {})


async def rig(tmp_path: Path, text: str = FAILURES) -> Rig:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    state = StateStore(engine)
    await state.create_tables()
    clock, team, config = FakeClock(), RecordingNotifier(), load(tmp_path, text)
    grouping = NotifyGrouping(state, {"team": team}, config.automations)
    return Rig(
        state, clock, team, config, Dispatcher(state, {"team": team}, clock, grouping=grouping)
    )


@pytest.fixture
async def failures(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await rig(tmp_path)
    yield made
    await made.state.engine.dispose()


@pytest.fixture
async def resolving(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await rig(tmp_path, RESOLVING)
    yield made
    await made.state.engine.dispose()


async def fire(
    rig: Rig,
    run: str,
    *,
    state: str = "triggered",
    deployment: str = "etl",
    for_each: bool = False,
) -> str:
    """Record a firing of the rig's automation for ``run`` with its intent, as the engine does."""
    automation = rig.automation
    event_id = str(uuid4())
    event: dict[str, Any] = {
        "id": event_id,
        "occurred": rig.clock.now().isoformat(),
        "event": "flow-run.Failed" if state == "triggered" else "flow-run.Completed",
        "resource": {"resource.id": f"flow-run.{run}", "resource.name": run},
        "related": [
            {
                "resource.id": f"prefect.deployment.{deployment}",
                "resource.role": "deployment",
                "resource.name": deployment,
            }
        ],
    }
    firing = Firing(
        id=str(uuid4()),
        automation=automation.name,
        state=state,
        at=rig.clock.now(),
        bucket={"resource.id": f"flow-run.{run}"} if for_each else {},
        event_ids=[event_id],
        context={"automation": {"name": automation.name}, "event": event, "events": [event]},
    )
    actions = automation.actions_on_resolve if state == "resolved" else automation.actions
    intent = Intent(firing.id, automation.name, 0, actions[0].model_dump(mode="json"))
    await rig.state.commit_batch(
        processed=[], firings=[firing], intents=[intent], now=rig.clock.now(), checkpoint=None
    )
    return intent.id


async def test_two_hundred_failures_in_a_minute_are_one_digest_after_group_wait(
    failures: Rig,
) -> None:
    """200 failed runs within a minute: nothing before group_wait, then one digest listing 200."""
    start = failures.clock.now()
    for run in range(200):
        await fire(failures, f"run-{run}")
        await failures.dispatcher.dispatch_due()
        await failures.clock.advance(timedelta(milliseconds=295))
    assert failures.team.sent == []
    await failures.clock.set(start + timedelta(minutes=1))
    await failures.dispatcher.dispatch_due()
    [sent] = failures.team.sent
    assert sent.message.subject == "[FIRING:200] production-failures deployment=etl"
    assert sent.message.body.count("\n- ") == 21  # 20 listed, then "and 180 more"
    assert sent.message.body.endswith("- and 180 more")
    assert sent.idempotency_key.startswith("digest:")
    [digest] = await failures.state.outbox(status="sent")
    assert digest.id == sent.idempotency_key
    firing = await failures.state.firing(digest.firing_id)
    assert firing is not None and firing.context["digest"]["counts"]["firing"] == 200
    grouped = await failures.state.outbox(status="grouped", limit=1000)
    assert len(grouped) == 200
    [attempt] = await failures.state.attempts(grouped[0].id)
    assert attempt.ok and attempt.reason.startswith('grouped into ["production-failures",0,')
    await failures.clock.advance(timedelta(minutes=30))
    await failures.dispatcher.dispatch_due()
    assert len(failures.team.sent) == 1  # the same set again is not a new message


async def test_a_new_failure_after_the_first_digest_waits_for_group_interval(
    failures: Rig,
) -> None:
    """A failure after the first digest is told at the next group_interval tick, not before."""
    start = failures.clock.now()
    await fire(failures, "first")
    await failures.dispatcher.dispatch_due()
    await failures.clock.set(start + timedelta(minutes=1))
    await failures.dispatcher.dispatch_due()
    assert [m.subject for m in failures.team.messages] == [
        "[FIRING:1] production-failures deployment=etl"
    ]
    await failures.clock.advance(timedelta(seconds=10))
    await fire(failures, "second")
    await failures.dispatcher.dispatch_due()
    await failures.clock.set(start + timedelta(minutes=6) - timedelta(seconds=1))
    await failures.dispatcher.dispatch_due()
    assert len(failures.team.sent) == 1
    await failures.clock.set(start + timedelta(minutes=6))
    await failures.dispatcher.dispatch_due()
    assert failures.team.messages[-1].subject == "[FIRING:2] production-failures deployment=etl"


async def test_groups_split_by_the_group_by_label(failures: Rig) -> None:
    """Failures of two deployments are two groups, so two digests."""
    await fire(failures, "a", deployment="etl")
    await fire(failures, "b", deployment="billing")
    await failures.dispatcher.dispatch_due()
    await failures.clock.advance(timedelta(minutes=1))
    await failures.dispatcher.dispatch_due()
    assert sorted(m.subject for m in failures.team.messages) == [
        "[FIRING:1] production-failures deployment=billing",
        "[FIRING:1] production-failures deployment=etl",
    ]


async def test_a_resolved_group_says_so_and_closes(resolving: Rig) -> None:
    """When every alert of a group resolves, the next flush sends [RESOLVED] and ends the group."""
    await fire(resolving, "r1", for_each=True)
    await resolving.dispatcher.dispatch_due()
    await resolving.clock.advance(timedelta(seconds=30))
    await resolving.dispatcher.dispatch_due()
    await resolving.clock.advance(timedelta(minutes=1))
    await fire(resolving, "r1", state="resolved", for_each=True)
    await resolving.dispatcher.dispatch_due()
    await resolving.clock.advance(timedelta(minutes=4))
    await resolving.dispatcher.dispatch_due()
    subjects = [m.subject for m in resolving.team.messages]
    assert subjects == [
        "[FIRING:1] run-health deployment=etl",
        "[RESOLVED] run-health deployment=etl",
    ]
    assert resolving.team.messages[-1].attributes["resolved"] == "true"
    assert "0 firing, 1 resolved" in resolving.team.messages[-1].body
    assert await resolving.dispatcher.grouping.next_flush() is None  # type: ignore[union-attr]


async def test_a_reactive_alert_that_never_resolves_ends_after_repeat_interval(
    failures: Rig,
) -> None:
    """Without a grouped resolve, an alert ends at at + repeat_interval, so the group closes."""
    await fire(failures, "stuck")
    await failures.dispatcher.dispatch_due()
    await failures.clock.advance(timedelta(minutes=1))
    await failures.dispatcher.dispatch_due()
    await failures.clock.advance(timedelta(hours=4))
    await failures.dispatcher.dispatch_due()
    assert [m.subject for m in failures.team.messages] == [
        "[FIRING:1] production-failures deployment=etl",
        "[RESOLVED] production-failures deployment=etl",
    ]
    assert await failures.state.next_group_flush() is None


async def test_a_duplicate_firing_counts_once(failures: Rig) -> None:
    """Two firings for the same run are one alert (the later one updates it): the digest says 1."""
    first = await fire(failures, "twice")
    await failures.dispatcher.dispatch_due()
    await failures.clock.advance(timedelta(seconds=1))
    second = await fire(failures, "twice")
    await failures.dispatcher.dispatch_due()
    await failures.clock.advance(timedelta(minutes=1))
    await failures.dispatcher.dispatch_due()
    [message] = failures.team.messages
    assert message.subject == "[FIRING:1] production-failures deployment=etl"
    assert "- and" not in message.body and message.body.count("\n- ") == 1
    group = 'grouped into ["production-failures",0,{"deployment":"etl"}]'
    assert [a.reason for a in await failures.state.attempts(first)] == [group]
    assert [a.reason for a in await failures.state.attempts(second)] == [group]


async def test_a_restarted_dispatcher_keeps_the_grouping_state(failures: Rig) -> None:
    """A new dispatcher on the same database flushes the groups the old one filled."""
    start = failures.clock.now()
    for run in ("a", "b", "c"):
        await fire(failures, run)
    await failures.dispatcher.dispatch_due()
    restarted = failures.restart()
    await failures.clock.set(start + timedelta(seconds=59))
    await restarted.dispatch_due()
    assert failures.team.sent == []
    await failures.clock.set(start + timedelta(minutes=1))
    await restarted.dispatch_due()
    [message] = failures.team.messages
    assert message.subject == "[FIRING:3] production-failures deployment=etl"


async def test_a_digest_renders_custom_templates_with_the_digest_context(tmp_path: Path) -> None:
    """subject/body of a grouped notify see counts, group_labels and the alerts."""
    text = FAILURES.replace(
        "        repeat_interval: 4h\n",
        "        repeat_interval: 4h\n"
        '        subject: "{{ counts.firing }} failed in {{ group_labels.deployment }}"\n'
        "        body: \"{% for a in alerts %}{{ a.labels['resource.name'] }} {% endfor %}\"\n",
    )
    made = await rig(tmp_path, text)
    try:
        for run in ("x", "y"):
            await fire(made, run)
        await made.dispatcher.dispatch_due()
        await made.clock.advance(timedelta(minutes=1))
        await made.dispatcher.dispatch_due()
        [message] = made.team.messages
        assert (message.subject, message.body) == ("2 failed in etl", "x y ")
    finally:
        await made.state.engine.dispose()


@pytest.mark.parametrize(
    ("templates", "why"),
    [
        ('        body: "{{ nope }}"\n', "body: undefined: 'nope' is undefined"),
        ("        body: \"{{ 'x' | center(10 ** 7) }}\"\n", "body: sandbox violation: center"),
        ('        subject: "{{ group_labels.missing }}"\n', "subject rendered empty"),
    ],
)
async def test_a_digest_whose_template_fails_sends_the_default_digest(
    tmp_path: Path, templates: str, why: str
) -> None:
    """A digest template that fails or renders blank sends the default digest, and says so."""
    text = FAILURES.replace(
        "        repeat_interval: 4h\n", "        repeat_interval: 4h\n" + templates
    )
    made = await rig(tmp_path, text)
    try:
        await fire(made, "x")
        await made.dispatcher.dispatch_due()
        await made.clock.advance(timedelta(minutes=1))
        await made.dispatcher.dispatch_due()
        [message] = made.team.messages
        assert message.subject == "[FIRING:1] production-failures deployment=etl"
        assert message.body.startswith("1 firing, 0 resolved")
        [row] = await made.state.outbox(status="sent")
        [attempt] = await made.state.attempts(row.id)
        assert attempt.reason.startswith(f"template failed ({why}")
        assert attempt.reason.endswith("; sent the default message: delivered")
    finally:
        await made.state.engine.dispose()


async def test_a_failed_digest_is_retried_under_the_same_key(failures: Rig) -> None:
    """A digest takes the normal path: a retryable failure is retried with the same key."""
    await fire(failures, "a")
    await failures.dispatcher.dispatch_due()
    failures.team.fail("503")
    await failures.clock.advance(timedelta(minutes=1))
    await failures.dispatcher.dispatch_due()
    await failures.clock.advance(timedelta(minutes=10))
    await failures.dispatcher.dispatch_due()
    first, second = failures.team.sent
    assert first.idempotency_key == second.idempotency_key
    [row] = await failures.state.outbox(status="sent")
    assert row.attempts == 2


async def test_the_dispatcher_timer_flushes_at_group_wait_on_the_injected_clock(
    failures: Rig,
) -> None:
    """The running dispatcher sleeps until the next flush on its clock, then sends the digest."""
    await failures.dispatcher.start(exclusive=True)
    try:
        await fire(failures, "timer")
        failures.dispatcher.wake()
        await until(failures.dispatcher, lambda: failures.state.outbox(status="grouped"))
        assert failures.team.sent == []
        await failures.clock.advance(timedelta(minutes=1))
        await until(failures.dispatcher, lambda: _sent(failures.team))
    finally:
        await failures.dispatcher.stop()
    assert failures.team.messages[0].subject == "[FIRING:1] production-failures deployment=etl"


async def _sent(team: RecordingNotifier) -> bool:
    return bool(team.sent)


async def until(dispatcher: Dispatcher, done: Callable[[], Awaitable[object]]) -> None:
    """Wait on the dispatcher's progress signal (bounded) until ``done()`` is truthy."""
    for _ in range(40):
        if await done():
            return
        # Progress made between the check and the wait is caught by the short bound.
        with contextlib.suppress(TimeoutError):
            await dispatcher.progressed(0.25)
    raise AssertionError("the dispatcher made no such progress within 10s")


@pytest.mark.parametrize(
    ("fragment", "problem"),
    [
        ("group_wait: 1m", "only apply with group_by"),
        ("group_by: [deployment]\n        group_wait: soon", "must be a duration"),
        ("group_by: [deployment]\n        group_interval: 0s", "must be a positive duration"),
        ("group_by: []", "must not be empty"),
    ],
)
def test_grouping_options_are_validated(tmp_path: Path, fragment: str, problem: str) -> None:
    """Bad grouping options are load errors that say what to write."""
    text = FAILURES.replace(
        "        group_by: [deployment]\n        group_wait: 1m\n", f"        {fragment}\n"
    )
    with pytest.raises(ConfigError, match=problem):
        load(tmp_path, text)
