"""Mapping Prefect actions to runbell's; blocks become channels named by ``${VAR}``."""

from __future__ import annotations

import re
from typing import Any

from automations.prefect_import.common import path
from automations.prefect_import.templates import TemplateRewriting

ACTION_MAP: dict[str, str | None] = {
    "do-nothing": "do-nothing",
    "run-deployment": "run-deployment",
    "pause-deployment": None,
    "resume-deployment": None,
    "cancel-flow-run": "cancel-run",
    "change-flow-run-state": "change-run-state",
    "suspend-flow-run": None,
    "resume-flow-run": None,
    "send-notification": "notify",
    "call-webhook": "call-webhook",
    "pause-automation": "pause-automation",
    "resume-automation": "resume-automation",
    "pause-work-queue": None,
    "resume-work-queue": None,
    "pause-work-pool": None,
    "resume-work-pool": None,
    "declare-incident": None,
}
"""Every Prefect action type (``prefect/events/actions.py``) → runbell action type, or
``None`` when runbell has no equivalent (left out of the YAML, reported as a warning)."""


class ActionMapping(TemplateRewriting):
    def _actions(self, raw: Any, where: str, name: str, key: str) -> list[dict[str, Any]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self._error(where, "must be a list of actions")
        out: list[dict[str, Any]] = []
        for index, action in enumerate(raw):
            converted = self._action(action, path(where, index), name, f"{key}[{index}]")
            if converted is not None:
                out.append(converted)
        return out

    def _action(self, raw: Any, where: str, name: str, field_name: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            raise self._error(where, "an action must be a mapping with 'type:'")
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise self._error(
                path(where, "type"), "required: the action type, e.g. send-notification"
            )
        label = f"{field_name} ({kind})"
        if kind not in ACTION_MAP:
            self._warn(name, label, "unknown Prefect action type; left out")
            return None
        target = ACTION_MAP[kind]
        if target is None:
            self._warn(name, label, "no runbell equivalent; left out")
            return None
        out: dict[str, Any] = {"type": target}
        if kind == "send-notification":
            out["channel"] = self._block_channel(raw, where, name, label)
            # Prefect's default subject (prefect/events/actions.py SendNotification).
            subject = raw.get("subject") or "Prefect automated notification"
            out["subject"] = self._template(str(subject), name, f"{field_name}.subject")
            body = raw.get("body")
            if not isinstance(body, str):
                raise self._error(path(where, "body"), "required: the notification text")
            out["body"] = self._template(body, name, f"{field_name}.body")
        elif kind == "call-webhook":
            channel = self._block_channel(raw, where, name, label, add_channel=False)
            out["url"] = self._env_ref(channel)
            payload = raw.get("payload")
            if isinstance(payload, str) and payload:
                out["payload"] = self._template(payload, name, f"{field_name}.payload")
        elif kind == "run-deployment":
            out.update(self._selected(raw, where, "deployment_id", name, label))
            out.update(self._run_options(raw, where, name, f"{field_name}."))
        elif kind == "change-flow-run-state":
            state = raw.get("state")
            if not isinstance(state, str):
                raise self._error(path(where, "state"), "required: the state type, e.g. FAILED")
            out["state"] = state
            for key in ("name", "message"):
                value = raw.get(key)
                if isinstance(value, str):
                    out[key] = self._template(value, name, f"{field_name}.{key}")
        elif kind in ("pause-automation", "resume-automation"):
            selected = self._selected(raw, where, "automation_id", name, label)
            if "automation_id" in selected:
                self.pending_automation_refs.append((out, selected["automation_id"], name, label))
            else:
                out.update(selected)
        return out

    def _selected(
        self, raw: dict[str, Any], where: str, id_key: str, name: str, label: str
    ) -> dict[str, Any]:
        source = raw.get("source", "selected")
        if source == "inferred":
            return {"source": "inferred"}
        if source != "selected":
            raise self._error(path(where, "source"), "must be selected or inferred")
        value = raw.get(id_key)
        if not isinstance(value, str) or not value:
            raise self._error(path(where, id_key), "required when source is selected")
        return {id_key: value}

    def _block_channel(
        self, raw: dict[str, Any], where: str, name: str, label: str, *, add_channel: bool = True
    ) -> str:
        block = raw.get("block_document_id")
        if not isinstance(block, str) or not block:
            raise self._error(path(where, "block_document_id"), "required: the Prefect block id")
        short = re.sub(r"[^0-9a-zA-Z]", "", block)[:8].lower() or "unknown"
        channel = f"prefect-block-{short}"
        what = "channel" if add_channel else "url"
        self._warn(
            name,
            label,
            f"Prefect block {block} is not imported; set {self._env_name(channel)} to its "
            f"Apprise/HTTP URL ({what} {channel if add_channel else self._env_ref(channel)})",
        )
        if add_channel:
            self.channels[channel] = {"url": self._env_ref(channel)}
        return channel

    def _run_options(
        self, raw: dict[str, Any], where: str, name: str, prefix: str
    ) -> dict[str, Any]:
        """``parameters``, ``job_variables`` (templates rewritten) and ``schedule_after`` of a
        run-deployment action or a deployment trigger; ``prefix`` starts warning paths."""
        out: dict[str, Any] = {}
        for key in ("parameters", "job_variables"):
            value = raw.get(key)
            if value:
                out[key] = self._rewrite_values(value, name, f"{prefix}{key}")
        schedule_after = raw.get("schedule_after")
        if schedule_after:
            out["schedule_after"] = self._duration(schedule_after, path(where, "schedule_after"))
        return out

    @staticmethod
    def _env_name(channel: str) -> str:
        return channel.upper().replace("-", "_") + "_URL"

    def _env_ref(self, channel: str) -> str:
        return "${" + self._env_name(channel) + "}"

    def _resolve_automation_refs(self) -> None:
        for out, prefect_id, name, label in self.pending_automation_refs:
            target = self.ids.get(prefect_id)
            if target is None:
                out["automation_id"] = prefect_id
                self._warn(
                    name,
                    label,
                    f"automation {prefect_id} is not in this file; replace automation_id with "
                    "'automation: <runbell name>'",
                )
            else:
                out["automation"] = target
