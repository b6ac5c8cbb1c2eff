"""Notification grouping: Alertmanager's group_wait / group_interval / repeat_interval / dedup.

Scenarios run through :func:`simulate`, which drives the pure core the way the
dispatcher does: alerts are added as they arrive, and ``flush_due`` runs whenever
``next_flush`` comes first. Times are seconds after T0; plain datetimes are the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.core.grouping import (
    Alert,
    Digest,
    GroupingPolicy,
    GroupingState,
    add,
    alert_id,
    digest_context,
    flush_due,
    next_flush,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MIN = 60
HOUR = 3600
POLICY = GroupingPolicy(group_by=("deployment",))
Arrival = tuple[float, Sequence[Alert]]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def alert(
    run: str,
    t: float = 0,
    *,
    state: Literal["firing", "resolved"] = "firing",
    deployment: str | None = "etl",
    firing: str | None = None,
    **labels: str,
) -> Alert:
    bucket = {"flow-run": run}
    every = {**bucket, **labels}
    if deployment is not None:
        every["deployment"] = deployment
    return Alert(
        id=alert_id("nightly", bucket),
        labels=every,
        state=state,
        at=at(t),
        firing_id=firing or f"{run}/{state}/{t}",
        summary=f"run {run} {state}",
    )


def simulate(
    arrivals: Sequence[Arrival],
    until: float,
    policy: GroupingPolicy = POLICY,
    *,
    roundtrip: bool = False,
    action: int = 0,
) -> tuple[list[Digest], GroupingState]:
    """Add each arrival at its time; flush whenever the timer is due first (before ``until``)."""
    state = GroupingState()
    digests: list[Digest] = []
    pending = sorted(arrivals, key=lambda item: item[0])
    while True:
        due = next_flush(state)
        if due is not None and due <= at(until) and (not pending or due < at(pending[0][0])):
            out, state = flush_due(state, due)
            digests.extend(out)
        elif pending:
            t, alerts = pending.pop(0)
            state = add(state, policy, alerts, at(t), automation="nightly", action=action)
        else:
            return digests, state
        if roundtrip:
            state = GroupingState.from_json(state.to_json())


def timeline(digests: Sequence[Digest]) -> list[tuple[float, str, int, int]]:
    return [
        ((d.at - T0).total_seconds(), d.reason, len(d.firing), len(d.resolved)) for d in digests
    ]


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        pytest.param(0.15, [(30, "first", 200, 0)], id="200-within-group_wait"),
        pytest.param(
            0.3, [(30, "first", 101, 0), (330, "new-alerts", 200, 0)], id="200-over-a-minute"
        ),
    ],
)
def test_storm_becomes_digests_at_group_wait_then_group_interval(
    spacing: float, expected: list[tuple[float, str, int, int]]
) -> None:
    """200 failed runs: one digest at group_wait; later ones wait for the next group_interval."""
    arrivals = [(i * spacing, [alert(f"r{i}", i * spacing)]) for i in range(200)]
    digests, _ = simulate(arrivals, until=HOUR)
    assert timeline(digests) == expected
    assert digests[0].labels == {"deployment": "etl"}


def test_new_alert_after_first_notification_waits_group_interval() -> None:
    """A new alert after the first digest is sent at the group's next tick, group_interval later."""
    digests, _ = simulate([(0, [alert("a")]), (40, [alert("b", 40)])], until=HOUR)
    assert timeline(digests) == [(30, "first", 1, 0), (330, "new-alerts", 2, 0)]
    assert [a.id for a in digests[1].firing] == [alert("a").id, alert("b").id]


def test_unchanged_group_repeats_only_after_repeat_interval() -> None:
    """An unchanged group is sent again at the first tick strictly after repeat_interval."""
    digests, _ = simulate([(0, [alert("a")])], until=9 * HOUR)
    # Ticks at 30s + k·5m; 4h30s is exactly repeat_interval after the first: not yet.
    assert timeline(digests) == [
        (30, "first", 1, 0),
        (4 * HOUR + 5 * MIN + 30, "repeat", 1, 0),
        (8 * HOUR + 10 * MIN + 30, "repeat", 1, 0),
    ]


@pytest.mark.parametrize(
    ("send_resolved", "resolve", "expected", "left"),
    [
        pytest.param(
            True, ["a", "b"], [(30, "first", 2, 0), (330, "all-resolved", 0, 2)], 0, id="all"
        ),
        pytest.param(False, ["a", "b"], [(30, "first", 2, 0)], 0, id="all-silently"),
        pytest.param(True, ["a"], [(30, "first", 2, 0), (330, "new-resolved", 1, 1)], 1, id="one"),
        pytest.param(False, ["a"], [(30, "first", 2, 0)], 1, id="one-silently"),
    ],
)
def test_resolved_alerts(
    send_resolved: bool,
    resolve: list[str],
    expected: list[tuple[float, str, int, int]],
    left: int,
) -> None:
    """Resolutions are sent (send_resolved) at the next tick; an all-resolved group is gone."""
    policy = GroupingPolicy(group_by=("deployment",), send_resolved=send_resolved)
    arrivals: list[Arrival] = [(0, [alert("a"), alert("b")])]
    arrivals += [(60, [alert(run, 60, state="resolved") for run in resolve])]
    digests, state = simulate(arrivals, until=HOUR, policy=policy)
    assert timeline(digests) == expected
    assert sum(len(g.alerts) for g in state.groups.values()) == left
    assert (next_flush(state) is None) == (left == 0)


def test_fired_and_resolved_within_group_wait_sends_nothing() -> None:
    """An alert that resolves before its group ever flushed is never mentioned."""
    arrivals: list[Arrival] = [(0, [alert("a")]), (10, [alert("a", 10, state="resolved")])]
    digests, state = simulate(arrivals, until=HOUR)
    assert digests == []
    assert state.groups == {}


def test_resolution_matches_by_identity_not_labels() -> None:
    """A resolution whose labels moved it to another group still resolves its alert."""
    arrivals: list[Arrival] = [
        (0, [alert("a")]),
        (60, [alert("a", 60, state="resolved", deployment=None)]),
    ]
    digests, state = simulate(arrivals, until=HOUR)
    assert timeline(digests) == [(30, "first", 1, 0), (330, "all-resolved", 0, 1)]
    assert digests[1].labels == {"deployment": "etl"}
    assert state.groups == {}


def test_resolved_alert_no_group_holds_changes_nothing() -> None:
    """A resolution for an alert that never fired here is dropped without creating a group."""
    state = GroupingState()
    after = add(state, POLICY, [alert("a", state="resolved")], T0, automation="n", action=0)
    assert after is state


def test_alert_past_ends_at_counts_as_resolved() -> None:
    """An alert resolves when its ends_at passes (Alertmanager's EndsAt), no resolved firing."""
    expiring = replace(alert("a"), ends_at=at(2 * MIN))
    digests, state = simulate([(0, [expiring])], until=HOUR)
    assert timeline(digests) == [(30, "first", 1, 0), (330, "all-resolved", 0, 1)]
    assert state.groups == {}


def test_identical_flush_sends_nothing() -> None:
    """A flush with the same alerts as the last digest (repeat_interval not over) sends nothing."""
    state = add(GroupingState(), POLICY, [alert("a")], T0, automation="n", action=0)
    first, state = flush_due(state, at(30))
    assert len(first) == 1
    early, same = flush_due(state, at(60))
    assert early == [] and same is state  # not due yet
    again, state = flush_due(state, at(330))
    assert again == []
    assert next_flush(state) == at(630)


@pytest.mark.parametrize(
    ("arrivals", "kept"),
    [
        pytest.param([(0, [alert("a"), alert("a"), alert("a")])], "a/firing/0", id="same-batch"),
        pytest.param(
            [(0, [alert("a")]), (5, [alert("a")]), (50, [alert("a")])],
            "a/firing/0",
            id="redelivered",
        ),
        pytest.param(
            [(10, [alert("a", 10, firing="new")]), (20, [alert("a", 5, firing="old")])],
            "new",
            id="older-firing-after-newer",
        ),
    ],
)
def test_duplicates_of_one_firing_count_once(arrivals: list[Arrival], kept: str) -> None:
    """The same firing delivered again (or an older one) is one alert and causes no new digest."""
    digests, _ = simulate(arrivals, until=HOUR)
    assert [d.reason for d in digests] == ["first"]
    assert [a.firing_id for a in digests[0].firing] == [kept]


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        pytest.param(("deployment",), [{"deployment": "etl"}, {"deployment": "ml"}], id="label"),
        pytest.param((), [{}], id="none"),
        pytest.param(("team",), [{}, {"team": "data"}], id="missing-label"),
        pytest.param(
            ("...",),
            [
                {"deployment": "etl", "flow-run": "a", "team": "data"},
                {"deployment": "etl", "flow-run": "b"},
                {"deployment": "ml", "flow-run": "c"},
            ],
            id="all-labels",
        ),
    ],
)
def test_group_by_splits_groups_by_label_values(
    group_by: tuple[str, ...], expected: list[dict[str, str]]
) -> None:
    """Alerts share a digest when their group_by values match; '...' groups by every label."""
    alerts = [alert("a", team="data"), alert("b"), alert("c", deployment="ml")]
    digests, _ = simulate([(0, alerts)], until=MIN, policy=GroupingPolicy(group_by=group_by))
    assert sorted((d.labels for d in digests), key=sorted) == sorted(expected, key=sorted)
    assert sum(len(d.firing) for d in digests) == 3


def test_actions_of_one_automation_group_apart() -> None:
    """The same alert for two notify actions lands in two groups (keyed by action index)."""
    state = add(GroupingState(), POLICY, [alert("a")], T0, automation="n", action=0)
    state = add(state, POLICY, [alert("a")], T0, automation="n", action=1)
    digests, _ = flush_due(state, at(30))
    assert sorted(d.action for d in digests) == [0, 1]
    assert len({d.idempotency_key for d in digests}) == 2


def test_alert_already_past_group_wait_flushes_at_once() -> None:
    """An alert whose at + group_wait is already past makes a never-flushed group due now."""
    state = add(GroupingState(), POLICY, [alert("a", -HOUR)], at(0), automation="n", action=0)
    assert next_flush(state) == at(0)
    fresh = add(GroupingState(), POLICY, [alert("a")], at(0), automation="n", action=0)
    assert next_flush(fresh) == at(30)


def test_idempotency_keys_are_deterministic_and_never_reused() -> None:
    """Replayed steps give the same keys; a group re-created after it ended gets new ones."""
    arrivals: list[Arrival] = [
        (0, [alert("a")]),
        (60, [alert("a", 60, state="resolved")]),
        (400, [alert("a", 400)]),
    ]
    first, _ = simulate(arrivals, until=HOUR)
    second, _ = simulate(arrivals, until=HOUR)
    assert [d.reason for d in first] == ["first", "all-resolved", "first"]
    assert [d.idempotency_key for d in first] == [d.idempotency_key for d in second]
    assert len({d.idempotency_key for d in first}) == 3
    assert all(len(d.idempotency_key) <= 80 for d in first)


def test_digest_context_gives_templates_alerts_and_counts() -> None:
    """digest_context: firing then resolved alerts, group and common labels, counts, JSON-shaped."""
    arrivals: list[Arrival] = [
        (0, [alert("a", team="data"), alert("b", 1, team="data")]),
        (60, [alert("a", 60, state="resolved", team="data")]),
    ]
    digests, _ = simulate(arrivals, until=HOUR)
    ctx = digest_context(digests[-1])
    assert ctx["status"] == "firing" and ctx["reason"] == "new-resolved"
    assert ctx["automation"] == "nightly"
    assert ctx["group_labels"] == {"deployment": "etl"}
    assert ctx["common_labels"] == {"deployment": "etl", "team": "data"}
    assert ctx["counts"] == {"firing": 1, "resolved": 1, "total": 2}
    assert [a["state"] for a in ctx["alerts"]] == ["firing", "resolved"]
    assert ctx["resolved"][0] == {
        "id": alert("a").id,
        "labels": {"flow-run": "a", "team": "data", "deployment": "etl"},
        "state": "resolved",
        "at": at(60).isoformat(),
        "firing_id": "a/resolved/60",
        "summary": "run a resolved",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"group_wait": timedelta(seconds=-1)},
        {"group_interval": timedelta(0)},
        {"repeat_interval": timedelta(0)},
    ],
)
def test_policy_refuses_intervals_that_would_spin(kwargs: dict[str, timedelta]) -> None:
    """A negative group_wait or a zero group/repeat interval is a configuration error."""
    with pytest.raises(ValueError, match="must"):
        GroupingPolicy(**kwargs)  # type: ignore[arg-type]


def test_state_json_round_trip_keeps_groups() -> None:
    """GroupingState survives JSON unchanged (policy, alerts, timer, notification log)."""
    arrivals: list[Arrival] = [(0, [alert("a"), alert("b", deployment="ml")]), (40, [alert("c")])]
    _, state = simulate(arrivals, until=60, policy=GroupingPolicy(group_by=("...",)))
    assert GroupingState.from_json(state.to_json()) == state


_runs = st.sampled_from(["a", "b", "c", "d"])
_arrival = st.tuples(
    st.integers(min_value=0, max_value=6 * HOUR),
    st.lists(
        st.tuples(_runs, st.sampled_from(["firing", "resolved"]), st.sampled_from(["etl", "ml"])),
        min_size=1,
        max_size=4,
    ),
)
_policies = st.builds(
    GroupingPolicy,
    group_by=st.sampled_from([(), ("deployment",), ("...",)]),
    group_wait=st.sampled_from([timedelta(0), timedelta(seconds=30)]),
    group_interval=st.sampled_from([timedelta(minutes=1), timedelta(minutes=5)]),
    repeat_interval=st.sampled_from([timedelta(minutes=10), timedelta(hours=4)]),
    send_resolved=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(raw=st.lists(_arrival, max_size=12), policy=_policies)
def test_json_round_trip_between_steps_gives_the_same_digests(
    raw: list[tuple[int, list[tuple[str, Literal["firing", "resolved"], str]]]],
    policy: GroupingPolicy,
) -> None:
    """Persisting and reloading the state between any two steps changes no digest."""
    arrivals: list[Arrival] = [
        (t, [alert(run, t, state=state, deployment=dep) for run, state, dep in batch])
        for t, batch in raw
    ]
    plain, end = simulate(arrivals, until=12 * HOUR, policy=policy)
    reloaded, end_reloaded = simulate(arrivals, until=12 * HOUR, policy=policy, roundtrip=True)
    assert plain == reloaded
    assert end == end_reloaded
    assert all(d.firing or d.resolved for d in plain)
    assert len({d.idempotency_key for d in plain}) == len(plain)
