"""Default messages: what a ``notify`` without subject/body says, per event family.

``default_message(context)`` takes the same context templates get::

    {"event": {"id", "occurred", "event", "resource": {label: value},
               "related": [{label: value}, ...], "payload": {...}},
     "automation": {"name": ...}, "firing": {...}, "ui_base_url": optional}

and says what happened, where (run, flow, deployment, work pool), since when
and links to it. It also fills ``Message.attributes`` with the structured
fields Slack's Block Kit layout uses (keys in ``ATTRIBUTE_KEYS``, documented in
``notifiers/CONTRACTS.md``). Families: ``flow-run.*`` / ``task-run.*`` state
events, ``deployment.*``, ``work-pool.*``, ``automation.*``, anything else.
Missing labels are left out, never rendered as "None".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from notifiers.model import Message
from notifiers.templates import humanize, ui_url

__all__ = ["ATTRIBUTE_KEYS", "default_message", "ui_url"]

ATTRIBUTE_KEYS = (
    "event",  # event name, e.g. "flow-run.Failed"
    "automation",  # automation name
    "kind",  # "flow run", "task run", "deployment", "work pool", "automation", "resource"
    "resource_id",  # e.g. "flow-run.8a1c..."
    "state",  # state name: Failed, Crashed, Completed, ...
    "state_type",  # FAILED, CRASHED, COMPLETED, ...
    "state_message",
    "run",  # run name
    "flow",
    "deployment",
    "work_pool",
    "tags",  # comma-separated
    "since",  # "2026-11-21 11:36:31 UTC"
    "duration",  # humanized, when the event carries one
    "url",  # link to the resource in the UI (needs ui_base_url)
    "url_label",  # button label for url: "Open run", "Open deployment", ...
    "summary",  # short text Slack shows instead of the body (the fields carry the rest)
)

# How a state name reads after "Flow run 'x' ...".
_STATE_VERBS = {
    "failed": "failed",
    "crashed": "crashed",
    "completed": "completed",
    "cancelled": "was cancelled",
    "cancelling": "is being cancelled",
    "timedout": "timed out",
    "late": "is late",
    "running": "is running",
    "pending": "is pending",
    "scheduled": "is scheduled",
    "paused": "is paused",
    "awaitingretry": "is awaiting retry",
    "retrying": "is retrying",
    "cached": "completed from cache",
}


def default_message(context: Mapping[str, Any]) -> Message:
    """A useful message for the event in ``context`` (see the module docstring)."""
    event: Mapping[str, Any] = context.get("event") or {}
    name = str(event.get("event", "") or "")
    family, _, detail = name.partition(".")
    resource: Mapping[str, Any] = event.get("resource") or {}
    related = _related_names(event.get("related") or [])
    automation = (context.get("automation") or {}).get("name") or ""
    resource_id = str(resource.get("resource.id", ""))
    resource_name = str(resource.get("resource.name", "") or resource_id)
    since = _timestamp(resource.get("state-timestamp") or event.get("occurred"))

    attrs: dict[str, str] = {
        "event": name,
        "automation": str(automation),
        "resource_id": resource_id,
        "flow": related.get("flow", ""),
        "deployment": related.get("deployment", ""),
        "work_pool": related.get("work-pool", ""),
        "tags": ", ".join(related.get("tags", "").split(",")) if related.get("tags") else "",
        "since": since,
        "duration": _duration(event.get("payload") or {}),
        "url": ui_url(context.get("ui_base_url"), resource_id),
    }

    if family in ("flow-run", "task-run"):
        kind = family.replace("-", " ")
        state = str(resource.get("state-name") or detail)
        verb = _STATE_VERBS.get(state.lower().replace(" ", ""), f"entered state {state}")
        attrs.update(
            kind=kind,
            run=resource_name,
            state=state,
            state_type=str(resource.get("state-type", "")),
            state_message=str(resource.get("state-message", "")),
            url_label="Open run",
        )
        where = f" of flow '{attrs['flow']}'" if attrs["flow"] else ""
        subject = f"{kind.capitalize()} '{resource_name}'{where} {verb}"
    elif family == "deployment":
        attrs.update(kind="deployment", deployment=resource_name, url_label="Open deployment")
        subject = f"Deployment '{resource_name}' {_readable(detail)}"
    elif family == "work-pool":
        attrs.update(kind="work pool", work_pool=resource_name, url_label="Open work pool")
        subject = f"Work pool '{resource_name}' {_readable(detail)}"
    elif family == "automation":
        attrs.update(kind="automation", url_label="Open automation")
        subject = f"Automation '{resource_name}' {_readable(detail)}"
    else:
        attrs.update(kind="resource", url_label="Open")
        subject = f"{name} on '{resource_name}'" if resource_name else name
    # Slack lays the fields out itself; its text block only needs the state message.
    attrs["summary"] = attrs.get("state_message", "")
    expected = context.get("expected")
    if isinstance(expected, Mapping):  # a Proactive firing: what did NOT happen
        missing = _missing(expected)
        if not event:
            subject = f"Automation '{automation}': {missing}" if automation else missing
        elif family in ("flow-run", "task-run"):
            where = f" of flow '{attrs['flow']}'" if attrs["flow"] else ""
            subject = f"{attrs['kind'].capitalize()} '{resource_name}'{where}: {missing}"
        else:
            subject = f"'{resource_name}': {missing}" if resource_name else missing
        attrs["summary"] = missing
        attrs["state"] = attrs["state_type"] = attrs["state_message"] = ""
    elif not event:
        subject = f"Automation '{automation}' fired" if automation else "runbell alert"
    return Message(subject=subject, body=_body(subject, attrs), attributes=_nonempty(attrs))


def _missing(expected: Mapping[str, Any]) -> str:
    """``no flow-run.Completed within 26h`` for a Proactive firing's ``expected``."""
    names = [str(n) for n in expected.get("expect") or []]
    what = " or ".join(names) if names else "event"
    within = expected.get("within_s")
    when = f" within {humanize(within)}" if isinstance(within, (int, float)) and within else ""
    return f"no {what}{when}"


def _readable(detail: str) -> str:
    """``not-ready`` → ``is not ready``; ``action.failed`` → ``action failed``."""
    words = detail.replace("-", " ").replace(".", " ").strip()
    if not words:
        return "changed"
    if words in ("ready", "not ready", "paused"):
        return f"is {words}"
    return words


def _related_names(related: Any) -> dict[str, str]:
    """Name (or id) of each related resource by role; tags joined with commas."""
    names: dict[str, str] = {}
    tags: list[str] = []
    for labels in related:
        if not isinstance(labels, Mapping):
            continue
        role = str(labels.get("resource.role", ""))
        rid = str(labels.get("resource.id", ""))
        if role == "tag":
            tags.append(rid.removeprefix("tag."))
        elif role and role not in names:
            names[role] = str(labels.get("resource.name") or rid)
    if tags:
        names["tags"] = ",".join(tags)
    return names


def _timestamp(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if moment.utcoffset() is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    offset = moment.utcoffset()
    suffix = " UTC" if offset is not None and not offset.total_seconds() else moment.strftime(" %z")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + suffix


def _duration(payload: Mapping[str, Any]) -> str:
    for key in ("duration", "total_run_time", "run_time"):
        value = payload.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return humanize(value)
    return ""


def _body(subject: str, attrs: Mapping[str, str]) -> str:
    lines = [f"{subject}."]
    for key, label in (
        ("since", "Since"),
        ("run", "Run"),
        ("flow", "Flow"),
        ("deployment", "Deployment"),
        ("work_pool", "Work pool"),
        ("duration", "Duration"),
        ("tags", "Tags"),
    ):
        if attrs.get(key):
            lines.append(f"{label}: {attrs[key]}")
    if attrs.get("state_message"):
        lines.append(f"State message: {attrs['state_message']}")
    if attrs.get("automation"):
        lines.append(f"Automation: {attrs['automation']}")
    if attrs.get("url"):
        lines.append(attrs["url"])
    return "\n".join(lines)


def _nonempty(attrs: Mapping[str, str]) -> dict[str, str]:
    # ``summary`` stays even when empty: it tells Slack not to repeat the body.
    return {key: value for key, value in attrs.items() if value or key == "summary"}
