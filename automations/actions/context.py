"""The template context of an action, and rendering that keeps JSON types.

Templates see ``event``, ``events``, ``automation``, ``firing``, ``labels``,
``run``, ``flow``, ``deployment`` and ``ui_base_url`` (for the ``ui_url``
filter). ``run`` / ``flow`` / ``deployment`` are built from the triggering
event's resources: the event's own resource when it is of that kind (a
``flow-run.*`` or ``task-run.*`` resource is the ``run``), else the related
resource with that role. Each is ``{"id", "name", "labels"}`` with ``id``
stripped of its kind prefix (``flow-run.8a1c`` → ``8a1c``), or ``{}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from automations.state import Firing
from notifiers import render

__all__ = ["render_value", "resource_view", "template_context"]

_RUN_KINDS = ("flow-run", "task-run")
# A string that is one expression and nothing else renders to that expression's JSON value.
_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)


def resource_view(labels: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``{"id", "name", "labels"}`` for a resource whose id is ``<kind>.<id>``."""
    rid = str(labels.get("resource.id", ""))
    return {
        "id": rid.removeprefix(f"{kind}."),
        "name": str(labels.get("resource.name", "")),
        "labels": dict(labels),
    }


def _kind(labels: Mapping[str, Any]) -> str:
    rid = str(labels.get("resource.id", ""))
    return rid.rsplit(".", 1)[0] if "." in rid else ""


def _find(event: Mapping[str, Any], kinds: tuple[str, ...], role: str) -> dict[str, Any]:
    resource: Mapping[str, Any] = event.get("resource") or {}
    kind = _kind(resource)
    if kind in kinds:
        return resource_view(resource, kind)
    for related in event.get("related") or []:
        if isinstance(related, Mapping) and related.get("resource.role") == role:
            return resource_view(related, _kind(related) or role)
    return {}


def template_context(firing: Firing, ui_base_url: str | None = None) -> dict[str, Any]:
    """Everything a template (and ``notifiers.default_message``) of this firing can use."""
    context: dict[str, Any] = {
        "automation": {"name": firing.automation},
        **firing.context,
        "firing": {
            "id": firing.id,
            "state": firing.state,
            "at": firing.at.isoformat(),
            "event_ids": firing.event_ids,
        },
        "labels": firing.bucket,
        "ui_base_url": ui_base_url or "",
    }
    event: Mapping[str, Any] = context.get("event") or {}
    context.setdefault("event", {})
    context.setdefault("events", [event] if event else [])
    context["run"] = _find(event, _RUN_KINDS, "flow-run")
    context["flow"] = _find(event, ("flow",), "flow")
    context["deployment"] = _find(event, ("deployment",), "deployment")
    return context


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value``; a string that is exactly one ``{{ expression }}``
    becomes that expression's JSON value (a number stays a number, a dict a dict).

    Blocking (templates have a time limit): call from a worker thread. Raises
    ``TemplateError``.
    """
    if isinstance(value, str):
        found = _ONE_EXPRESSION.match(value)
        if found is None:
            return render(value, context)
        text = render("{{ (" + found["expr"] + ") | tojson }}", context)
        return json.loads(text)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    return value
