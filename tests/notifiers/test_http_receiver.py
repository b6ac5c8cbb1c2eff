"""The shared http_receiver fixture itself (scripting, recording, waiting)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.http_receiver import HttpReceiver, Reply

pytestmark = pytest.mark.integration


async def test_records_requests_and_plays_scripted_replies(http_receiver: HttpReceiver) -> None:
    """Scripted replies are used once each, in order, then the default reply."""
    http_receiver.script("/x", Reply(status=429, headers={"Retry-After": "3"}), Reply(status=201))
    async with httpx.AsyncClient() as client:
        first = await client.post(http_receiver.url("/x"), json={"n": 1})
        second = await client.post(http_receiver.url("/x?q=1"), content=b"raw")
        third = await client.get(http_receiver.url("/x"))

    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 201
    assert third.status_code == 200
    requests = await http_receiver.wait_for_async(3)
    assert [r.method for r in requests] == ["POST", "POST", "GET"]
    assert requests[0].json == {"n": 1}
    assert (requests[1].query, requests[1].body, requests[1].json) == ("q=1", b"raw", None)
    assert requests[0].headers["Content-Type"] == "application/json"


def test_wait_for_times_out_with_a_count(http_receiver: HttpReceiver) -> None:
    """wait_for raises TimeoutError naming how many requests arrived."""
    with pytest.raises(TimeoutError, match="got 0"):
        http_receiver.wait_for(1, timeout=0.2)


async def test_hang_is_bounded_by_client_timeout(http_receiver: HttpReceiver) -> None:
    """A hanging reply makes clients time out; the request is still recorded."""
    http_receiver.script("/slow", Reply(hang=5))
    async with httpx.AsyncClient(timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(http_receiver.url("/slow"), json={})
    assert len(http_receiver.wait_for(1)) == 1
