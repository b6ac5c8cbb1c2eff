"""Orchestrator adapters against a local HTTP server replaying recorded Prefect answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import automations.delivery.orchestrators as orchestrators
from automations.delivery.orchestrators import (
    HttpController,
    OrchestratorConfigError,
    PrefectController,
    RequestTemplate,
    RunController,
)
from automations.delivery.orchestrators.testing import FakeRunController
from events.testing import FakeClock
from notifiers import SendResult
from tests.integration.http_receiver import HttpReceiver, Reply, free_port

pytestmark = pytest.mark.integration

RECORDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "prefect" / "rest"
RUN = "83df3042-7567-4070-ac2c-2bc1a9f2a841"
ADHOC_RUN = "538ee6bf-27fe-4b94-bebd-5e0051aea6c1"
DEPLOYMENT = "c328f5af-3dfa-4f13-8732-8194e1d266b2"
API_KEY = "pnu_0123456789abcdefSECRET"
KEY = "firing-1:0"


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDINGS / name).read_text())
    return data


def replay(name: str) -> Reply:
    """The recorded Prefect answer as a scripted reply."""
    response = recording(name)["response"]
    return Reply(status=response["status_code"], body=response["json"])


def no_history(receiver: HttpReceiver) -> None:
    receiver.always("/api/flow_run_states/", Reply(body="[]", headers=_JSON))


_JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def prefect(http_receiver: HttpReceiver) -> AsyncIterator[PrefectController]:
    no_history(http_receiver)
    controller = PrefectController(http_receiver.url("/api"), api_key=API_KEY, timeout=1.0)
    yield controller
    await controller.aclose()


def posted(receiver: HttpReceiver) -> list[Any]:
    return [r for r in receiver.requests if r.method == "POST"]


# -- surface ----------------------------------------------------------------


def test_all_names_exist() -> None:
    """Every name in automations.delivery.orchestrators.__all__ is importable."""
    for name in orchestrators.__all__:
        assert hasattr(orchestrators, name), name


async def test_implementations_satisfy_the_protocol(prefect: PrefectController) -> None:
    """Prefect, generic HTTP and the fake are all RunControllers."""
    async with HttpController() as http:
        for controller in (prefect, http, FakeRunController()):
            assert isinstance(controller, RunController)


# -- Prefect: retry ---------------------------------------------------------


async def test_retry_sends_what_prefects_retry_button_sends(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """retry_run posts SCHEDULED/AwaitingRetry to set_state (recording 07); ACCEPT is success."""
    http_receiver.script(
        f"/api/flow_runs/{RUN}/set_state", replay("07_retry_set_state_awaiting_retry.json")
    )
    result = await prefect.retry_run(f"flow-run.{RUN}", idempotency_key=KEY)

    assert result.ok and not result.retryable
    assert result.status_code == 201
    assert result.ref is not None and result.ref["state_name"] == "AwaitingRetry"
    [request] = posted(http_receiver)
    recorded = recording("07_retry_set_state_awaiting_retry.json")["request"]["json"]
    assert request.path == f"/api/flow_runs/{RUN}/set_state"
    assert request.json["force"] is recorded["force"] is False
    assert {k: request.json["state"][k] for k in ("type", "name")} == {
        "type": "SCHEDULED",
        "name": "AwaitingRetry",
    }
    assert KEY in request.json["state"]["message"]


async def test_abort_with_http_200_is_a_failure(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """Prefect's 200 + status ABORT (recording 10) is a non-retryable failure quoting its reason."""
    http_receiver.script(
        f"/api/flow_runs/{ADHOC_RUN}/set_state", replay("10_retry_adhoc_no_force.json")
    )
    result = await prefect.retry_run(ADHOC_RUN, idempotency_key=KEY)

    assert not result.ok and not result.retryable
    assert result.status_code == 200
    assert "ABORT" in result.reason
    assert "Cannot reschedule a run without an associated deployment." in result.reason
    assert result.ref is not None and result.ref["state_type"] == "FAILED"


async def test_retry_force_retries_a_run_without_deployment(http_receiver: HttpReceiver) -> None:
    """With retry_force the request carries force=true, as in recording 11, and succeeds."""
    no_history(http_receiver)
    http_receiver.script(
        f"/api/flow_runs/{ADHOC_RUN}/set_state", replay("11_retry_adhoc_force.json")
    )
    async with PrefectController(http_receiver.url("/api"), retry_force=True) as prefect:
        result = await prefect.retry_run(f"prefect.flow-run.{ADHOC_RUN}", idempotency_key=KEY)

    assert result.ok
    [request] = posted(http_receiver)
    assert request.json["force"] is True


@pytest.mark.parametrize(
    ("status", "details", "retryable", "retry_after"),
    [
        ("REJECT", {"type": "reject_details", "reason": "already scheduled"}, False, None),
        ("WAIT", {"type": "wait_details", "reason": "slots", "delay_seconds": 30}, True, 30.0),
    ],
)
async def test_reject_and_wait_are_failures(
    prefect: PrefectController,
    http_receiver: HttpReceiver,
    status: str,
    details: dict[str, Any],
    retryable: bool,
    retry_after: float | None,
) -> None:
    """REJECT is final; WAIT is retryable after Prefect's delay_seconds."""
    answer = replay("10_retry_adhoc_no_force.json")
    body = {**answer.body, "status": status, "details": details}  # type: ignore[dict-item]
    http_receiver.script(f"/api/flow_runs/{RUN}/set_state", Reply(status=200, body=body))
    result = await prefect.retry_run(RUN, idempotency_key=KEY)

    assert not result.ok
    assert result.retryable is retryable
    assert result.retry_after == retry_after
    assert details["reason"] in result.reason


@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after"),
    [
        (Reply(status=500, body="boom"), True, None),
        (Reply(status=503, body="", headers={"Retry-After": "12"}), True, 12.0),
        (Reply(status=429, body="slow down", headers={"Retry-After": "7"}), True, 7.0),
        (Reply(status=404, body={"detail": "Flow run not found"}), False, None),
    ],
)
async def test_http_errors_follow_the_retryability_rules(
    prefect: PrefectController,
    http_receiver: HttpReceiver,
    reply: Reply,
    retryable: bool,
    retry_after: float | None,
) -> None:
    """5xx and 429 are retryable with Retry-After; other 4xx are not."""
    http_receiver.script(f"/api/flow_runs/{RUN}/set_state", reply)
    result = await prefect.retry_run(RUN, idempotency_key=KEY)

    assert not result.ok
    assert result.retryable is retryable
    assert result.status_code == reply.status
    assert result.retry_after == retry_after


async def test_timeout_is_retryable(http_receiver: HttpReceiver) -> None:
    """An orchestrator that does not answer in time is a retryable failure."""
    no_history(http_receiver)
    http_receiver.script(f"/api/flow_runs/{RUN}/set_state", Reply(hang=5))
    async with PrefectController(http_receiver.url("/api"), timeout=0.2) as prefect:
        result = await prefect.retry_run(RUN, idempotency_key=KEY)

    assert not result.ok and result.retryable
    assert "timed out" in result.reason


async def test_connection_refused_is_retryable() -> None:
    """Nothing listening is a retryable failure, not an exception."""
    async with PrefectController(f"http://127.0.0.1:{free_port()}/api") as prefect:
        result = await prefect.retry_run(RUN, idempotency_key=KEY)
    assert not result.ok and result.retryable


async def test_a_state_already_set_with_the_key_is_not_set_again(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """When the run's history holds a state carrying the key, no second set_state is sent."""
    accepted = recording("07_retry_set_state_awaiting_retry.json")["response"]["json"]["state"]
    earlier = {**accepted, "message": f"Retry by runbell [runbell key {KEY}]"}
    http_receiver.always("/api/flow_run_states/", Reply(body=json.dumps([earlier]), headers=_JSON))
    result = await prefect.retry_run(RUN, idempotency_key=KEY)

    assert result.ok
    assert result.ref is not None and result.ref["deduplicated"] == "true"
    assert posted(http_receiver) == []
    [history] = http_receiver.requests
    assert history.query == f"flow_run_id={RUN}"


async def test_a_bad_run_id_fails_without_a_request(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """A run id that is not a UUID is a non-retryable failure and nothing is sent."""
    result = await prefect.retry_run("flow-run.not-a-uuid", idempotency_key=KEY)
    assert not result.ok and not result.retryable
    assert http_receiver.requests == []


async def test_a_2xx_that_is_not_prefects_answer_is_a_failure(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """A 200 with a non-JSON body (wrong base URL) is not a success."""
    http_receiver.script(f"/api/flow_runs/{RUN}/set_state", Reply(status=200, body="<html>"))
    result = await prefect.retry_run(RUN, idempotency_key=KEY)
    assert not result.ok and not result.retryable
    assert "/api" in result.reason


async def test_api_key_is_sent_and_never_shown(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """The API key goes in Authorization: Bearer and appears in no target or reason."""
    http_receiver.script(f"/api/flow_runs/{RUN}/set_state", Reply(status=401, body="bad key"))
    result = await prefect.retry_run(RUN, idempotency_key=KEY)

    assert all(r.headers["Authorization"] == f"Bearer {API_KEY}" for r in http_receiver.requests)
    assert API_KEY not in result.target + result.reason + prefect.target
    assert not result.retryable


# -- Prefect: cancel and change state --------------------------------------


async def test_cancel_and_change_state_send_set_state(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """cancel_run proposes CANCELLING; change_run_state proposes the given type, name and force."""
    accepted = replay("07_retry_set_state_awaiting_retry.json")
    path = f"/api/flow_runs/{RUN}/set_state"
    http_receiver.script(path, accepted, accepted)
    cancel = await prefect.cancel_run(RUN, idempotency_key="k1")
    change = await prefect.change_run_state(
        RUN,
        state_type="failed",
        name="Stopped",
        message="by hand",
        force=True,
        idempotency_key="k2",
    )

    assert cancel.ok and change.ok
    first, second = (r.json for r in posted(http_receiver))
    assert (first["state"]["type"], first["state"]["name"], first["force"]) == (
        "CANCELLING",
        "Cancelling",
        False,
    )
    assert (second["state"]["type"], second["state"]["name"], second["force"]) == (
        "FAILED",
        "Stopped",
        True,
    )
    assert second["state"]["message"].startswith("by hand")


async def test_cancel_refused_because_already_cancelled_is_success(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """Prefect REJECTs Cancelling for a Scheduled run and cancels it outright: that is success."""
    answer = recording("10_retry_adhoc_no_force.json")["response"]["json"]
    state = {**answer["state"], "type": "CANCELLED", "name": "Cancelled"}
    details = {"type": "reject_details", "reason": "no infrastructure to terminate."}
    body = {"state": state, "status": "REJECT", "details": details}
    http_receiver.script(f"/api/flow_runs/{RUN}/set_state", Reply(status=200, body=body))
    result = await prefect.cancel_run(RUN, idempotency_key=KEY)
    assert result.ok
    assert result.ref is not None and result.ref["state_type"] == "CANCELLED"


async def test_unknown_state_type_fails(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """A state type Prefect does not have is a non-retryable failure naming the valid ones."""
    result = await prefect.change_run_state(RUN, state_type="EXPLODED", idempotency_key=KEY)
    assert not result.ok and not result.retryable
    assert "COMPLETED" in result.reason
    assert http_receiver.requests == []


# -- Prefect: run deployment ------------------------------------------------


async def test_run_deployment_posts_parameters_and_idempotency_key(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """create_flow_run gets the parameters with their JSON types and the key (recording 04)."""
    path = f"/api/deployments/{DEPLOYMENT}/create_flow_run"
    http_receiver.script(path, replay("04_create_flow_run_api_deploy.json"))
    parameters = {"x": 2, "ratio": 0.5, "dry": False, "items": [1, "a"], "opts": {"n": None}}
    result = await prefect.run_deployment(
        f"deployment.{DEPLOYMENT}", parameters=parameters, idempotency_key=KEY
    )

    assert result.ok
    assert result.created_id == "d0ca9c12-ee77-4c9c-ac31-ad1047c38770"
    assert result.ref is not None and result.ref["deduplicated"] == "false"
    [request] = http_receiver.requests
    assert request.path == path
    assert request.json == {"parameters": parameters, "idempotency_key": KEY}


async def test_run_deployment_returning_the_existing_run_is_deduplicated(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """Prefect answers 200 with the same run for a known key: success, marked deduplicated."""
    answer = replay("04_create_flow_run_api_deploy.json")
    path = f"/api/deployments/{DEPLOYMENT}/create_flow_run"
    http_receiver.script(path, Reply(status=200, body=answer.body))
    result = await prefect.run_deployment(DEPLOYMENT, parameters={}, idempotency_key=KEY)

    assert result.ok
    assert result.created_id == "d0ca9c12-ee77-4c9c-ac31-ad1047c38770"
    assert result.ref is not None and result.ref["deduplicated"] == "true"


async def test_schedule_after_is_measured_on_the_clock(http_receiver: HttpReceiver) -> None:
    """schedule_after sends a Scheduled state at clock.now() + schedule_after."""
    clock = FakeClock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    path = f"/api/deployments/{DEPLOYMENT}/create_flow_run"
    http_receiver.script(path, replay("04_create_flow_run_api_deploy.json"))
    async with PrefectController(http_receiver.url("/api"), clock=clock) as prefect:
        result = await prefect.run_deployment(
            DEPLOYMENT,
            parameters={"x": 1},
            idempotency_key=KEY,
            schedule_after=timedelta(minutes=5),
            job_variables={"image": "etl:2"},
        )

    assert result.ok
    [request] = http_receiver.requests
    assert request.json["state"] == {
        "type": "SCHEDULED",
        "name": "Scheduled",
        "state_details": {"scheduled_time": "2026-11-21T12:05:00+00:00"},
    }
    assert request.json["job_variables"] == {"image": "etl:2"}


async def test_run_deployment_with_unserialisable_parameters_fails(
    prefect: PrefectController, http_receiver: HttpReceiver
) -> None:
    """Parameters that are not JSON fail without a request."""
    result = await prefect.run_deployment(
        DEPLOYMENT, parameters={"when": object()}, idempotency_key=KEY
    )
    assert not result.ok and not result.retryable
    assert http_receiver.requests == []


def test_prefect_config_errors() -> None:
    """A non-HTTP API URL is refused at construction, with what to write instead."""
    with pytest.raises(OrchestratorConfigError, match=r"http://127\.0\.0\.1:4200/api"):
        PrefectController("127.0.0.1:4200/api")


# -- generic HTTP: templating ----------------------------------------------


def test_request_template_checks_itself() -> None:
    """Bad method, non-HTTP URL and template syntax errors are refused at construction."""
    with pytest.raises(OrchestratorConfigError, match="method"):
        RequestTemplate("http://x/run", method="TRACE")
    with pytest.raises(OrchestratorConfigError, match="http"):
        RequestTemplate("ftp://x/run")
    with pytest.raises(OrchestratorConfigError, match=r"body\.conf"):
        RequestTemplate("http://x/run", body={"conf": "{{ oops"})


# -- generic HTTP: requests -------------------------------------------------


def airflow(receiver: HttpReceiver, **kwargs: Any) -> HttpController:
    """An Airflow-style "trigger a DAG run" request aimed at the receiver."""
    template = RequestTemplate(
        receiver.url("/api/v1/dags/{{ deployment_id | urlencode }}/dagRuns"),
        headers={"Authorization": "Basic c2VjcmV0LXBhc3M="},
        body={
            "dag_run_id": "runbell-{{ idempotency_key }}",
            "conf": {"n": "{{ parameters.n }}", "all": "{{ parameters }}"},
            "logical_date": "{{ scheduled_time }}",
        },
        created_id_path="dag_run_id",
    )
    return HttpController(name="airflow", run_deployment=template, **kwargs)


async def test_http_run_deployment_renders_a_typed_body(http_receiver: HttpReceiver) -> None:
    """The templated request keeps JSON types, sends Idempotency-Key and reads created_id."""
    http_receiver.script(
        "/api/v1/dags/nightly%20etl/dagRuns", Reply(status=200, body={"dag_run_id": "dr-1"})
    )
    clock = FakeClock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    async with airflow(http_receiver, clock=clock) as controller:
        result = await controller.run_deployment(
            "deployment.nightly etl",
            parameters={"n": 3, "full": True},
            idempotency_key=KEY,
            schedule_after=timedelta(hours=1),
        )

    assert result.ok, result.reason
    assert result.created_id == "dr-1"
    [request] = http_receiver.requests
    assert request.headers["Idempotency-Key"] == KEY
    assert request.headers["Authorization"] == "Basic c2VjcmV0LXBhc3M="
    assert request.json == {
        "dag_run_id": f"runbell-{KEY}",
        "conf": {"n": 3, "all": {"n": 3, "full": True}},
        "logical_date": "2026-11-21T13:00:00+00:00",
    }
    assert "c2VjcmV0LXBhc3M=" not in result.target + result.reason


@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after"),
    [
        (Reply(status=409, body="exists"), False, None),
        (Reply(status=502), True, None),
        (Reply(status=429, headers={"Retry-After": "3"}), True, 3.0),
    ],
)
async def test_http_non_2xx_is_a_failure(
    http_receiver: HttpReceiver, reply: Reply, retryable: bool, retry_after: float | None
) -> None:
    """A non-2xx answer is a failure with notifiers' retryability rules."""
    http_receiver.script("/api/v1/dags/d1/dagRuns", reply)
    async with airflow(http_receiver) as controller:
        result = await controller.run_deployment("d1", parameters={"n": 1}, idempotency_key=KEY)

    assert not result.ok
    assert result.retryable is retryable
    assert result.retry_after == retry_after


async def test_http_run_operations_see_the_bare_run_id(http_receiver: HttpReceiver) -> None:
    """retry/cancel/change-state templates get run_id without the flow-run. prefix."""
    template = RequestTemplate(
        http_receiver.url("/runs/{{ run_id }}/{{ operation }}"),
        body={"state": "{{ state_type | default('') }}", "force": "{{ force | default(false) }}"},
    )
    async with HttpController(
        retry_run=template, cancel_run=template, change_run_state=template
    ) as controller:
        results = [
            await controller.retry_run(f"flow-run.{RUN}", idempotency_key="a"),
            await controller.cancel_run(RUN, idempotency_key="b"),
            await controller.change_run_state(
                RUN, state_type="failed", force=True, idempotency_key="c"
            ),
        ]

    assert all(r.ok for r in results)
    paths = [r.path for r in http_receiver.requests]
    assert paths == [
        f"/runs/{RUN}/retry_run",
        f"/runs/{RUN}/cancel_run",
        f"/runs/{RUN}/change_run_state",
    ]
    assert http_receiver.requests[2].json == {"state": "FAILED", "force": True}
    assert http_receiver.requests[0].json == {"state": "", "force": False}


async def test_http_unconfigured_operation_and_template_errors_fail(
    http_receiver: HttpReceiver,
) -> None:
    """An operation without a request, or a template that fails, is a non-retryable failure."""
    broken = RequestTemplate(
        http_receiver.url("/x"), body={"n": "{{ parameters.n.m.o | int(base=foo) }}"}
    )
    async with HttpController(run_deployment=broken) as controller:
        missing = await controller.retry_run(RUN, idempotency_key=KEY)
        failed = await controller.run_deployment("d", parameters={}, idempotency_key=KEY)

    assert not missing.ok and not missing.retryable
    assert "not configured" in missing.reason
    assert not failed.ok and not failed.retryable
    assert failed.reason.startswith("template error: body.n: ")
    assert http_receiver.requests == []


# -- the fake ---------------------------------------------------------------


async def test_fake_has_one_effect_per_key() -> None:
    """The fake answers its script, then succeeds once per key and dedups repeats."""
    fake = FakeRunController()
    fake.script(SendResult.failure("fake", 0.0, reason="down", retryable=True))
    first = await fake.run_deployment("deployment.d", parameters={"n": 1}, idempotency_key="k")
    second = await fake.run_deployment("d", parameters={"n": 1}, idempotency_key="k")
    third = await fake.run_deployment("d", parameters={"n": 1}, idempotency_key="k")

    assert (first.ok, second.ok, third.ok) == (False, True, True)
    assert second.created_id is not None and third.created_id == second.created_id
    assert third.ref is not None and third.ref["deduplicated"] == "true"
    assert len(fake.calls) == 3
    assert [(c.operation, c.subject) for c in fake.effects] == [("run_deployment", "d")]
