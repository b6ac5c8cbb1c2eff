"""`make run`: the whole loop on the embedded default, with nothing configured.

1. runs a tiny HTTP receiver on 127.0.0.1 standing in for Slack (an Apprise
   ``json://`` target) and prints what it receives;
2. starts ``runbell serve`` with examples/automations.yaml (in-process bus, SQLite);
3. emits examples/failed-run.json (a failing production run) with ``runbell emit``;
4. shows the notification arriving, then keeps serving until Ctrl-C
   (``--once`` stops after the first notification, for tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
arrived = threading.Condition()
received: list[dict[str, Any]] = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.end_headers()
        message = json.loads(body or b"{}")
        # Printed before the main thread is told, so it shows before "the loop works".
        print(f"\n  >>> notification received on {self.path}")
        print(f"      title:   {message.get('title')}")
        print(f"      message: {message.get('message')}\n", flush=True)
        with arrived:
            received.append(message)
            arrived.notify_all()

    def log_message(self, *_: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    import urllib.error
    import urllib.request

    for _ in range(int(seconds * 10)):
        if proc.poll() is not None:
            raise SystemExit(f"runbell serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=0.5) as answer:  # noqa: S310 (our own http:// URL)
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
    raise SystemExit("runbell serve did not become healthy in time")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--once", action="store_true", help="stop after the first notification")
    args = parser.parse_args()

    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="runbell-demo-"))
    env = {
        **os.environ,
        "RUNBELL_API_TOKEN": token,
        "RUNBELL_DATABASE_URL": os.environ.get(
            "RUNBELL_DATABASE_URL", f"sqlite:///{workdir / 'runbell.db'}"
        ),
        "DEMO_NOTIFY_URL": f"json://127.0.0.1:{receiver.server_port}/slack-standin",
    }
    print(f"runbell demo: serving on {url} (embedded: in-process bus, SQLite in {workdir})")
    serve = subprocess.Popen(
        [
            str(BIN / "runbell"),
            "serve",
            "--config",
            str(HERE / "automations.yaml"),
            "--port",
            str(port),
        ],
        env=env,
    )
    try:
        wait_healthy(url, serve)
        event = json.loads((HERE / "failed-run.json").read_text())
        event["id"] = str(uuid.uuid4())  # a fresh run each time: ingestion dedups on id
        emitted = workdir / "failed-run.json"
        emitted.write_text(json.dumps(event))
        print(f"runbell demo: emitting {event['event']} for {event['resource']['resource.name']}")
        subprocess.run(
            [str(BIN / "runbell"), "emit", "--file", str(emitted), "--url", url],
            env=env,
            check=True,
        )
        with arrived:
            if not arrived.wait_for(lambda: bool(received), timeout=30):
                print("runbell demo: no notification arrived within 30 s", file=sys.stderr)
                return 1
        print("runbell demo: the loop works: event -> automation -> notification.")
        if args.once:
            return 0
        print(
            f"Still serving. Try: RUNBELL_API_TOKEN={token} {BIN / 'runbell'} emit "
            f"--url {url} --event flow-run.Crashed --resource-id flow-run.1 "
            "--label resource.name=my-run --related tag=tag.production   (Ctrl-C stops)"
        )
        serve.wait()
        return serve.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            serve.kill()
        receiver.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)  # the demo's database and event file


if __name__ == "__main__":
    raise SystemExit(main())
