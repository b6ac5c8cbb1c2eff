"""The runbell command line: validate, emit, serve's token, and the make-run demo."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from uuid import uuid4

import httpx
from typer.testing import CliRunner

from automations.service.cli import _event_from_flags, app
from events import Event
from tests.integration.http_receiver import free_port

ROOT = Path(__file__).resolve().parents[2]
RUNBELL = Path(sys.executable).parent / "runbell"
runner = CliRunner()

BAD = """\
channels:
  team:
    url: ${MISSING_HOOK}
automations:
  - name: a
    trigger:
      type: event
      posture: Sometimes
    actions:
      - type: notify
        channel: nobody
"""


def test_validate_accepts_the_example() -> None:
    """The shipped example validates with exit code 0."""
    result = runner.invoke(
        app, ["validate", str(ROOT / "examples" / "automations.yaml")], env={"DEMO_NOTIFY_URL": ""}
    )
    assert result.exit_code == 0, result.output
    assert "1 automation(s)" in result.output


def test_validate_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    """A bad file exits non-zero and names each problem at file:line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    result = runner.invoke(app, ["validate", str(bad)], env={})
    assert result.exit_code == 1
    out = result.output
    assert f"{bad}:3:" in out and "MISSING_HOOK" in out
    assert f"{bad}:8:" in out and "posture" in out
    assert f"{bad}:11:" in out and "nobody" in out


def test_emit_flags_build_a_valid_event() -> None:
    """--event/--resource-id/--label/--related/--payload make an event the API accepts."""
    body = _event_from_flags(
        "flow-run.Failed",
        "flow-run.1",
        ["resource.name=nightly"],
        ["tag=tag.production", "deployment=deployment.7,resource.name=etl/prod"],
        '{"attempt": 2}',
    )
    event = Event.model_validate(body)
    assert event.resource == {"resource.id": "flow-run.1", "resource.name": "nightly"}
    assert event.related_by_role("deployment")[0]["resource.name"] == "etl/prod"
    assert event.payload == {"attempt": 2}


def test_serve_without_token_generates_and_prints_one(tmp_path: Path) -> None:
    """With no RUNBELL_API_TOKEN, serve prints a generated token once and enforces it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"RUNBELL_API_TOKEN", "RUNBELL_BUS"}}
    env["RUNBELL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'r.db'}"
    proc = subprocess.Popen(
        [str(RUNBELL), "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "API token" in line
        token = line.rsplit(" ", 1)[-1].strip()
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):  # bounded: up to 30 s for the server to listen
            try:
                httpx.get(f"{url}/health", timeout=0.2)
                break
            except httpx.HTTPError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
        assert httpx.get(f"{url}/api/events").status_code == 401
        authorised = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/events", headers=authorised).status_code == 200
        assert f"serving on {url}" in proc.stderr.readline()
        wrong = subprocess.run(
            [str(RUNBELL), "emit", "--event", "x.y", "--resource-id", "x.1", "--url", url],
            env={**env, "RUNBELL_API_TOKEN": "not-it"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert wrong.returncode == 1
        assert "401" in wrong.stderr
        assert "RUNBELL_API_TOKEN" in wrong.stderr  # where the token comes from
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ctrl_c_stops_serve_and_its_worker_quietly(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) stops serve, exit 0, no error lines."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RUNBELL_BUS"}
    env |= {
        "RUNBELL_API_TOKEN": "t",
        "RUNBELL_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "RUNBELL_LOG_LEVEL": "warning",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(RUNBELL), "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,  # a process group of its own, as a terminal gives
        )
    try:
        children: list[str] = []
        for _ in range(300):  # bounded: 30 s for the server and its worker
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            with contextlib.suppress(httpx.HTTPError):
                if children and httpx.get(f"http://127.0.0.1:{port}/health").is_success:
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        assert children, "serve started no delivery worker"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "serving on" in text
    assert "delivery_worker_exited" not in text
    assert "service_started" not in text  # an info line, below --log-level warning
    assert not Path(f"/proc/{children[0]}").exists()


def test_version_and_an_unknown_log_level() -> None:
    """--version prints the version; --log-level refuses a level it does not know."""
    version = subprocess.run([str(RUNBELL), "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.startswith("runbell 0.")
    loud = subprocess.run(
        [str(RUNBELL), "serve", "--log-level", "loud"], capture_output=True, text=True
    )
    assert loud.returncode == 2
    assert "debug, info, warning, error" in loud.stderr


def test_make_run_demo_shows_the_loop(tmp_path: Path) -> None:
    """`make run`'s demo serves, emits a failing run and sees the notification arrive."""
    env = {**os.environ, "RUNBELL_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "title:   Run daft-wallaby failed" in done.stdout
    assert "the loop works" in done.stdout
    # The notification shows before the demo says it worked, and nothing is left behind.
    assert done.stdout.index("title:   Run daft") < done.stdout.index("the loop works")
    workdir = done.stdout.split("SQLite in ", 1)[1].split(")", 1)[0]
    assert workdir.startswith(tempfile.gettempdir())
    assert not Path(workdir).exists()


def test_import_prefect_prints_yaml_and_warns_on_stderr() -> None:
    """`runbell import prefect FILE`: runbell YAML on stdout, differences on stderr."""
    source = ROOT / "tests" / "fixtures" / "prefect_automations" / "docs_automations.yaml"
    done = _import_prefect(source)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Imported from Prefect")
    assert "automations:" in done.stdout
    assert "prefect." not in done.stdout.split("automations:", 1)[1].split("{{")[0]
    assert (
        "warning: Retry storms: actions[0] (pause-work-pool): no runbell equivalent" in done.stderr
    )


def test_import_prefect_reports_a_bad_file(tmp_path: Path) -> None:
    """Malformed input exits 1 with the file and what is wrong."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("automations:\n  - name: x\n    trigger: [\n")
    done = _import_prefect(bad)
    assert done.returncode == 1
    assert str(bad) in done.stderr


def test_the_fuller_example_validates() -> None:
    """examples/production.yaml (every kind of channel, trigger and action) loads."""
    env = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
        "SMTP_PASSWORD": "x",
        "AUDIT_SIGNING_SECRET": "x",
    }
    result = runner.invoke(app, ["validate", str(ROOT / "examples" / "production.yaml")], env=env)
    assert result.exit_code == 0, result.output
    assert "6 automation(s), 3 channel(s)" in result.output


def _import_prefect(source: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNBELL), "import", "prefect", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_runbell_test_shows_what_each_firing_would_send_and_what_was_muted(
    tmp_path: Path,
) -> None:
    """`runbell test` prints each firing's rendered notify and why its actions were muted."""
    (tmp_path / "a.yaml").write_text(
        """
channels: {team: {url: "json://127.0.0.1:9/x"}}
automations:
  - name: failures
    cooldown: 1h
    trigger: {type: event, expect: ["flow-run.Failed"]}
    actions:
      - type: notify
        channel: team
        subject: "Run {{ event.resource['resource.name'] }} failed"
      - type: notify
        channel: team
        body: "{{ event.resource['state-message'] }}"
      - type: do-nothing
"""
    )
    lines = []
    for minute, name in ((0, "first"), (5, "second")):
        lines.append(
            Event.model_validate(
                {
                    "id": str(uuid4()),
                    "occurred": f"2026-12-01T00:0{minute}:00Z",
                    "event": "flow-run.Failed",
                    "resource": {"resource.id": f"flow-run.{name}", "resource.name": name},
                }
            ).model_dump_json()
        )
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    # A process of its own: the command configures logging for the whole process.
    result = subprocess.run(
        [
            str(RUNBELL),
            "test",
            str(tmp_path / "a.yaml"),
            "--events",
            str(tmp_path / "events.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["muted"] is None
    assert first["actions"][0]["subject"] == "Run first failed"
    assert first["actions"][0]["body"].startswith("Flow run 'first' failed.")
    assert "template_failed" not in first["actions"][0]
    assert first["actions"][1]["template_failed"] == "body rendered empty"  # no state message
    assert first["actions"][1]["body"].startswith("Flow run 'first' failed.")  # the default
    assert first["actions"][2] == {"type": "do-nothing", "action": {"type": "do-nothing"}}
    assert second["muted"] == "cooldown"
