"""The HTTP API at its edges: bad query parameters, a full disk, repeated ids, integers
past 64 bits, the bearer header's spacing and the schema pages behind the token."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from automations.testing import settle
from events.sqlite import on_connection
from notifiers.testing import RecordingNotifier
from tests.automations.service_harness import TOKEN, Running, failed_run, running_service

ENV = {"HOOK_URL": "json://127.0.0.1:9/never-used"}


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    async with running_service(tmp_path, env=ENV, notifiers={"team": RecordingNotifier()}) as r:
        yield r


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/events", {"since": "2026-11-21T10:00:00"}, "since"),
        ("/api/events", {"until": "2026-11-21T10:00:00"}, "until"),
        ("/api/events", {"since": "0001-01-01T00:00:00+05:00"}, "since"),
        ("/api/events", {"until": "9999-12-31T23:59:59-05:00"}, "until"),
        ("/api/events", {"cursor": _cursor(f"2026-11-21T10:00:00+00:00|{2**63}")}, "cursor"),
        ("/api/events", {"cursor": _cursor("0001-01-01T00:00:00+05:00|1")}, "cursor"),
        ("/api/events", {"cursor": _cursor("2026-11-21T10:00:00|1")}, "cursor"),
        ("/api/events", {"cursor": _cursor("2026-11-21T10:00:00+00:00|-1")}, "cursor"),
        ("/api/events", {"cursor": "!!!"}, "cursor"),
        ("/api/deliveries", {"since": "2026-11-21T10:00:00"}, "since"),
        ("/api/deliveries", {"since": "0001-01-01T00:00:00+05:00"}, "since"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_parameter(
    api: Running, path: str, params: dict[str, str], named: str
) -> None:
    """A time without a timezone or out of range, or a cursor the store never issued
    (a sequence past 2**63, a year-1 time): 422 naming the parameter, never a 500."""
    answer = await api.client.get(path, params=params)
    assert answer.status_code == 422, answer.text
    assert ["query", named] in [d["loc"] for d in answer.json()["detail"]]
    assert all(d["msg"] for d in answer.json()["detail"])


async def test_year_one_in_utc_is_a_valid_since(api: Running) -> None:
    """The earliest time there is, in UTC, is a valid lower bound (it matches everything)."""
    await api.client.post("/api/events", json=failed_run())
    answer = await api.client.get("/api/events", params={"since": "0001-01-01T00:00:00Z"})
    assert answer.status_code == 200
    assert len(answer.json()["events"]) == 1


async def _fill_disk(running: Running) -> None:
    """SQLite's page limit on the service's one pooled connection: the pages it has."""

    def limit(connection: sqlite3.Connection) -> None:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count={pages}")

    await on_connection(running.service.db, limit)


async def _free_disk(running: Running) -> None:
    def lift(connection: sqlite3.Connection) -> None:
        connection.execute("PRAGMA max_page_count=1073741823")

    await on_connection(running.service.db, lift)


async def test_a_full_disk_is_503_with_the_reason_and_health_says_so(api: Running) -> None:
    """SQLITE_FULL for real (max_page_count): POST answers 503 naming the trouble, /health
    answers 503 "degraded" until a write succeeds again; nothing half-stored."""
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    await _fill_disk(api)
    big = failed_run(payload={"blob": "x" * 200_000})
    refused = await api.client.post("/api/events", json=big)
    health = await api.client.get("/health")
    await _free_disk(api)
    assert refused.status_code == 503, refused.text
    assert "disk is full" in refused.json()["detail"]
    assert "Traceback" not in refused.text and "INSERT" not in refused.text
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert "disk is full" in health.json()["storage"]
    again = await api.client.post("/api/events", json=big)
    assert again.status_code == 202
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    stored = (await api.client.get("/api/events", params={"name": "flow-run.*"})).json()
    assert [e["id"] for e in stored["events"]] == [big["id"]]


async def test_a_repeated_id_in_one_batch_is_accepted_once(api: Running) -> None:
    """Dedupe, first copy wins (as the store does): each id listed once, stored once."""
    first, other = failed_run(), failed_run()
    repeat = {**first, "payload": {"second": True}}
    answer = await api.client.post("/api/events", json=[first, other, repeat])
    assert answer.status_code == 202
    assert answer.json() == {"accepted": [first["id"], other["id"]]}
    stored = (await api.client.get("/api/events", params={"name": "flow-run.*"})).json()
    assert sorted(e["id"] for e in stored["events"]) == sorted([first["id"], other["id"]])
    assert next(e for e in stored["events"] if e["id"] == first["id"])["payload"] == {}


async def test_integers_past_64_bits_come_back_exact(api: Running) -> None:
    """2**70 and -2**70 in a payload are stored and listed as the same integers."""
    big = {"up": 2**70, "down": -(2**70), "edge": 2**64, "nested": [{"n": -(2**63) - 1}]}
    event = failed_run(payload=big)
    body = httpx.Request("POST", "/", json=event).content
    assert b"1180591620717411303424" in body  # the client sends the exact digits
    assert (await api.client.post("/api/events", json=event)).status_code == 202
    await settle(api.service)
    listed = await api.client.get("/api/events", params={"name": "flow-run.Failed"})
    assert b"1180591620717411303424" in listed.content
    assert listed.json()["events"][0]["payload"] == big


BEARER_FORMS = [
    (f"Bearer {TOKEN}", True),
    (f"bearer {TOKEN}", True),
    (f"Bearer  {TOKEN}", True),  # RFC 6750: "Bearer" 1*SP b64token
    (f"Bearer   {TOKEN}", True),
    (f"Bearer\t{TOKEN}", False),
    (f"Bearer {TOKEN}x", False),
    (f"Basic {TOKEN}", False),
    (f"Bearer{TOKEN}", False),
    ("Bearer", False),
]


@pytest.mark.parametrize(("header", "accepted"), BEARER_FORMS)
async def test_every_route_reads_the_bearer_header_the_same_way(
    api: Running, header: str, accepted: bool
) -> None:
    """One rule for every route: scheme in any case, one or more spaces, the exact token."""
    transport = api.client._transport
    heads = {"Authorization": header}
    async with httpx.AsyncClient(transport=transport, base_url="http://runbell.test") as anon:
        answers = {
            "POST /api/events": await anon.post("/api/events", json=failed_run(), headers=heads),
            "GET /api/events": await anon.get("/api/events", headers=heads),
            "GET /api/firings": await anon.get("/api/firings", headers=heads),
            "GET /api/deliveries": await anon.get("/api/deliveries", headers=heads),
            "POST replay": await anon.post("/api/deliveries/nope/replay", headers=heads),
            "GET /openapi.json": await anon.get("/openapi.json", headers=heads),
        }
    codes = {route: answer.status_code for route, answer in answers.items()}
    if accepted:
        assert 401 not in codes.values(), codes
    else:
        assert set(codes.values()) == {401}, codes


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
async def test_schema_pages_need_the_token_by_default(api: Running, path: str) -> None:
    """/docs, /redoc and /openapi.json answer 401 without the token, 200 with it."""
    transport = api.client._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://runbell.test") as anon:
        refused = await anon.get(path)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert (await api.client.get(path)).status_code == 200


async def test_public_docs_setting_opens_the_schema_pages(tmp_path: Path) -> None:
    """RUNBELL_PUBLIC_DOCS=1: the schema pages answer without a token; the API does not."""
    async with running_service(
        tmp_path, env=ENV, notifiers={"team": RecordingNotifier()}, public_docs=True
    ) as running:
        transport = running.client._transport
        async with httpx.AsyncClient(transport=transport, base_url="http://runbell.test") as anon:
            codes = [(await anon.get(p)).status_code for p in ("/docs", "/redoc", "/openapi.json")]
            assert (await anon.get("/api/events")).status_code == 401
    assert codes == [200, 200, 200]


@pytest.mark.parametrize(
    ("value", "public"), [("", False), ("0", False), ("1", True), ("on", True)]
)
def test_runbell_public_docs_is_read_from_the_environment(value: str, public: bool) -> None:
    """RUNBELL_PUBLIC_DOCS: unset or 0 keeps the schema pages behind the token."""
    from automations.service.settings import Settings

    assert Settings.from_env({"RUNBELL_PUBLIC_DOCS": value}).public_docs is public
    with pytest.raises(ValueError, match="RUNBELL_PUBLIC_DOCS"):
        Settings.from_env({"RUNBELL_PUBLIC_DOCS": "maybe"})
