"""The template context of an action (rendering that keeps JSON types is
``notifiers.render_json``, one rule for every action and orchestrator).

Templates see ``event``, ``events``, ``automation``, ``firing``, ``labels``,
``run``, ``flow``, ``deployment`` and ``ui_base_url`` (for the ``ui_url``
filter). ``run`` / ``flow`` / ``deployment`` are built from the triggering
event's resources: the event's own resource when it is of that kind (a
``flow-run.*`` or ``task-run.*`` resource is the ``run``), else the related
resource with that role. Each is ``{"id", "name", "labels"}`` with ``id``
stripped of its kind prefix (``flow-run.8a1c`` → ``8a1c``), or ``{}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from automations.state import Firing

__all__ = ["resource_view", "template_context"]

_RUN_KINDS = ("flow-run", "task-run")


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
    events = context.get("events") or []
    # A firing read back from the store carries "event"; one fresh from the engine
    # (``runbell test``) has only "events", whose first is the triggering one.
    event: Mapping[str, Any] = context.get("event") or (events[0] if events else {})
    context["event"] = event
    context.setdefault("events", [event] if event else [])
    context["run"] = _find(event, _RUN_KINDS, "flow-run")
    context["flow"] = _find(event, ("flow",), "flow")
    context["deployment"] = _find(event, ("deployment",), "deployment")
    return context
