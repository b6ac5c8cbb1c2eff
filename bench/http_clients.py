"""HTTP client libraries on runbell's outbound path: JSON POSTs per second and CPU per POST.

A minimal keep-alive HTTP/1.1 server (raw ``asyncio.Protocol`` on uvloop, answering
200 with a small JSON body) runs in a child process on 127.0.0.1, so its CPU is not
counted; this process sends ``--requests`` JSON POSTs (a Slack-sized Block Kit
payload, pre-encoded as Slack's notifier does) through each client, at each
``--concurrency``, on uvloop (what ``runbell serve`` runs on). The clients take
turns within each repetition, so a slow minute of the host hits all of them.
``runbell`` is ``notifiers.HttpClient`` (aiohttp with its per-host pool and the
conversion of every answer to a ``SendResult``), the client every outbound call uses.

Reported per client and concurrency: the median over ``--repeat`` repetitions of
requests/s (wall clock) and of CPU µs per request (this process's user + system
time), and each client's ratio to httpx.

    .venv/bin/python bench/http_clients.py   # 20,000 POSTs, concurrency 1 and 16, 5 reps
    .venv/bin/python bench/http_clients.py --requests 5000 --repeat 3 --out bench/results/x.json

aiohttp is not a runbell dependency: ``pip install aiohttp`` to include it (it is
skipped otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import orjson
import uvloop

HOST = "127.0.0.1"
_ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)

# About the size of a default failure alert's Block Kit payload.
PAYLOAD = orjson.dumps(
    {
        "channel": "C0123",
        "text": "Flow run 'daft-wallaby' of flow 'etl' failed\nRuntimeError: boom",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Flow run failed*"}}],
        "attachments": [
            {
                "color": "#E01E5A",
                "fallback": "Flow run 'daft-wallaby' of flow 'etl' failed",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": "RuntimeError: boom"}},
                    {
                        "type": "section",
                        "fields": [
                            {"type": "mrkdwn", "text": f"*{k}*\n{v}"}
                            for k, v in (
                                ("State", "Failed"),
                                ("Run", "daft-wallaby"),
                                ("Flow", "etl"),
                                ("Deployment", "etl/prod"),
                                ("Duration", "3m 20s"),
                            )
                        ],
                    },
                ],
            }
        ],
    }
)
HEADERS = {"Content-Type": "application/json; charset=utf-8", "Authorization": "Bearer xoxb-x"}


# -- the server (child process) ------------------------------------------------
class _Server(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(_ANSWER)


async def _serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Server, HOST, 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent ends


# -- the clients ---------------------------------------------------------------
Send = Callable[[], Awaitable[None]]
Client = tuple[Send, Callable[[], Awaitable[None]]]


async def _httpx(url: str, limit: int) -> Client:
    import httpx

    client = httpx.AsyncClient(
        timeout=10.0,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
    )

    async def send() -> None:
        response = await client.post(url, content=PAYLOAD, headers=HEADERS)
        assert response.status_code == 200

    return send, client.aclose


async def _aiohttp(url: str, limit: int) -> Client:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=10.0)
    )

    async def send() -> None:
        async with session.post(url, data=PAYLOAD, headers=HEADERS, allow_redirects=False) as r:
            await r.read()
            assert r.status == 200

    return send, session.close


async def _runbell(url: str, limit: int) -> Client:
    from notifiers import HttpClient  # aiohttp plus the conversion to SendResult

    client = HttpClient(timeout=10.0)

    async def send() -> None:
        reply = await client.request(
            "POST", url, target="bench", what="bench", content=PAYLOAD, headers=HEADERS
        )
        assert reply.result.ok

    return send, client.aclose


CLIENTS: dict[str, tuple[str, Callable[[str, int], Awaitable[Client]]]] = {
    "httpx": ("httpx", _httpx),
    "aiohttp": ("aiohttp", _aiohttp),
    "runbell": ("notifiers.http", _runbell),
}


def available(name: str) -> bool:
    module = CLIENTS[name][0]
    with contextlib.suppress(ModuleNotFoundError):
        return importlib.util.find_spec(module) is not None
    return False


async def _run_once(name: str, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request) for ``requests`` POSTs at ``concurrency``."""
    send, close = await CLIENTS[name][1](url, concurrency)
    try:
        for _ in range(200):  # connections open, caches warm
            await send()
        per_worker = requests // concurrency

        async def worker() -> None:
            for _ in range(per_worker):
                await send()

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await close()
    done = per_worker * concurrency
    return done / wall, cpu / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=list(CLIENTS))
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve())
        return

    clients = [c for c in args.clients if available(c)]
    skipped = sorted(set(args.clients) - set(clients))
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    server = subprocess.Popen(  # this very script, as the server
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://{HOST}:{int(server.stdout.readline())}/api/chat.postMessage"
        samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for rep in range(args.repeat):
            for concurrency in args.concurrency:
                for name in clients:
                    got = uvloop.run(_run_once(name, url, args.requests, concurrency))
                    samples.setdefault((name, concurrency), []).append(got)
                    print(
                        f"rep {rep + 1} c={concurrency:<3} {name:<8} "
                        f"{got[0]:>8,.0f} req/s {got[1]:>6.0f} µs CPU/req",
                        flush=True,
                    )
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)

    results = []
    print(f"\nmedians of {args.repeat} repetitions, {args.requests:,} POSTs each")
    print("| concurrency | client | req/s | CPU µs/req | req/s vs httpx | CPU vs httpx |")
    print("|--:|--|--:|--:|--:|--:|")
    for concurrency in args.concurrency:
        base = samples.get(("httpx", concurrency))
        base_rate = statistics.median(s[0] for s in base) if base else None
        base_cpu = statistics.median(s[1] for s in base) if base else None
        for name in clients:
            rate = statistics.median(s[0] for s in samples[(name, concurrency)])
            cpu = statistics.median(s[1] for s in samples[(name, concurrency)])
            vs_rate = f"{rate / base_rate:.2f}x" if base_rate else "-"
            vs_cpu = f"{cpu / base_cpu:.2f}x" if base_cpu else "-"
            print(f"| {concurrency} | {name} | {rate:,.0f} | {cpu:.0f} | {vs_rate} | {vs_cpu} |")
            results.append(
                {
                    "client": name,
                    "concurrency": concurrency,
                    "requests_per_s": [s[0] for s in samples[(name, concurrency)]],
                    "cpu_us_per_request": [s[1] for s in samples[(name, concurrency)]],
                    "median_requests_per_s": rate,
                    "median_cpu_us_per_request": cpu,
                }
            )
    if args.out:
        meta: dict[str, Any] = {
            "requests": args.requests,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "versions": {m: version(m) for m in ("httpx", "httpcore", "uvloop")},
        }
        if "aiohttp" in clients:
            meta["versions"]["aiohttp"] = version("aiohttp")
        with open(args.out, "w") as out:
            json.dump({"meta": meta, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
