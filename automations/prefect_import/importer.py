"""``runbell import prefect``: Prefect automation definitions → runbell automation YAML.

A pure function, :func:`convert`, reads what Prefect users already have:

* the files of ``prefect automation create -f`` (YAML or JSON; one automation, a
  list, or ``{automations: [...]}``, exactly as ``prefect/cli/automation.py``
  accepts them) and the output of ``prefect automation inspect --json/--yaml``
  (one automation or a list, with ``id``/``created``/``updated`` that are ignored);
* a ``prefect.yaml`` whose ``deployments: [{name, triggers: [...]}]`` carry
  deployment triggers (``prefect/events/schemas/deployment_triggers.py``).

It returns runbell YAML (``channels:`` when needed, then ``automations:``) and a
list of warnings, one line each, ``<automation>: <field>: <what differs>``. The
CLI prints the YAML on stdout and the warnings on stderr.

Mapping (see ``automations/spec/`` for the runbell side):

* names and labels lose ``prefect.``: event names (``prefect.flow-run.Failed`` →
  ``flow-run.Failed``), label keys (``prefect.resource.id`` → ``resource.id``),
  ``resource.id`` values (``prefect.tag.prod`` → ``tag.prod``), ``for_each`` keys
  (``related:flow:prefect.resource.id`` → ``related:flow:resource.id``) and quoted
  ``prefect.`` strings inside Jinja templates (``['prefect.resource.name']`` →
  ``['resource.name']``);
* triggers keep Prefect's words: ``event`` (match, match_related, after, expect,
  for_each, posture, threshold, within), ``compound`` (require, within, triggers),
  ``sequence`` (within, triggers), ``metric`` (match, match_related, metric);
  ``within`` becomes ``90s``/``30m``/``26h``/``1d`` (seconds when not whole);
* actions follow :data:`ACTION_MAP`. ``send-notification`` becomes ``notify`` on a
  channel ``prefect-block-<first 8 of the block id>`` whose URL is
  ``${PREFECT_BLOCK_<ID8>_URL}``; ``call-webhook`` gets the same kind of ``url``.
  Actions with no runbell equivalent are **left out of the YAML** and reported as
  a warning; an automation left with no action gets ``do-nothing`` (runbell needs
  at least one action) and a warning saying so. ``actions_on_trigger`` (Prefect's
  second list of trigger actions) is appended to ``actions``;
* a deployment trigger becomes an automation named ``<deployment> / <trigger
  name>`` (or Prefect's own default ``<deployment>__automation_<n>``) with a
  ``run-deployment`` action naming the deployment, carrying ``parameters``,
  ``job_variables`` and ``schedule_after``. Prefect does **not** narrow such a
  trigger to its own deployment's events (``Trigger.as_automation`` copies
  ``match_related`` unchanged and only sets ``owner_resource``), so neither does
  this import unless ``scope_deployment_triggers=True``.

Where runbell deliberately differs from Prefect (issue 3, "Where Prefect is
wrong") the import warns: an event-name ``*`` that now also matches the empty
string (Prefect compiles it to ``.+``), an event name Prefect matched as a prefix
(``re.match``) that runbell matches whole, a label glob Prefect compared
literally, a Proactive heartbeat (zombie) trigger (#21932) and a Proactive trigger
without ``after`` ("no completion within N").

Malformed input raises :class:`PrefectImportError`, a ``ValueError`` naming the
source, the line when known, and the path in the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from automations.prefect_import.actions import ACTION_MAP, ActionMapping
from automations.prefect_import.common import Automation, PrefectImportError, path, strip
from automations.prefect_import.pattern_warnings import PatternWarnings
from automations.prefect_import.templates import TemplateRewriting
from automations.prefect_import.triggers import TriggerMapping
from automations.prefect_import.yaml_io import dump, parse

__all__ = [
    "ACTION_MAP",
    "ImportResult",
    "PrefectImportError",
    "convert",
]

_AUTOMATION_KEYS = frozenset(
    {"name", "description", "enabled", "trigger", "actions", "actions_on_trigger",
     "actions_on_resolve", "tags", "owner_resource", "id", "created", "updated"}
)  # fmt: skip
_DEPLOYMENT_TRIGGER_KEYS = frozenset(
    {"name", "description", "enabled", "parameters", "job_variables", "schedule_after"}
)


@dataclass(frozen=True)
class ImportResult:
    """Runbell YAML (for stdout) and one warning line per difference (for stderr)."""

    yaml: str
    warnings: list[str] = field(default_factory=list)


def convert(
    text: str, *, source: str = "<stdin>", scope_deployment_triggers: bool = False
) -> ImportResult:
    """Turn Prefect automations (YAML or JSON) or a ``prefect.yaml`` into runbell YAML.

    ``scope_deployment_triggers`` adds ``match_related`` on the owning deployment
    (by ``resource.name``) to deployment triggers; Prefect itself does not.
    Raises :class:`PrefectImportError` (a ``ValueError``) for malformed input.
    """
    data = parse(text, source)
    converter = _Converter(source, scope_deployment_triggers)
    converter.run(data)
    return ImportResult(yaml=converter.render(), warnings=converter.warnings)


class _Converter(TriggerMapping, ActionMapping, TemplateRewriting, PatternWarnings):
    """One conversion: the document's shapes (a list, ``automations:``, ``prefect.yaml``)."""

    def run(self, data: Any) -> None:
        if isinstance(data, list):
            self._automation_list(data, "")
        elif isinstance(data, dict) and "automations" in data:
            raw = data["automations"]
            if not isinstance(raw, list):
                raise self._error("automations", "must be a list of automations")
            self._automation_list(raw, "automations")
        elif isinstance(data, dict) and "deployments" in data:
            self._deployments(data["deployments"])
        elif isinstance(data, dict) and ("trigger" in data or "name" in data):
            self._collect_names(data)
            self.automations.append(self._automation(data, ""))
        else:
            raise self._error(
                "",
                "expected a Prefect automation (name, trigger, actions), a list of them, "
                "'automations:' with a list, or a prefect.yaml with 'deployments:'",
            )
        self._resolve_automation_refs()
        self._pattern_warnings()

    def _automation_list(self, raw: list[Any], base: str) -> None:
        for item in raw:
            self._collect_names(item)
        for index, item in enumerate(raw):
            self.automations.append(self._automation(item, path(base, index)))

    def _collect_names(self, item: Any) -> None:
        """Remember every event name in the document for the prefix/glob checks."""
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("expect", "after"):
                    for name in value if isinstance(value, list) else [value]:
                        if isinstance(name, str) and "*" not in name and "?" not in name:
                            self.event_names.add(strip(name.removeprefix("!")))
                else:
                    self._collect_names(value)
        elif isinstance(item, list):
            for value in item:
                self._collect_names(value)

    def _deployments(self, raw: Any) -> None:
        if not isinstance(raw, list):
            raise self._error("deployments", "must be a list of deployments")
        self._collect_names(raw)
        found = False
        for index, deployment in enumerate(raw):
            where = path("deployments", index)
            if not isinstance(deployment, dict):
                raise self._error(where, "must be a mapping with 'name:' and 'triggers:'")
            triggers = deployment.get("triggers")
            if triggers is None:
                continue
            name = deployment.get("name")
            if not isinstance(name, str) or not name:
                raise self._error(path(where, "name"), "a deployment with triggers needs a name")
            if not isinstance(triggers, list):
                raise self._error(path(where, "triggers"), "must be a list of triggers")
            for position, trigger in enumerate(triggers, start=1):
                found = True
                self.automations.append(
                    self._deployment_trigger(
                        name, trigger, position, path(path(where, "triggers"), position - 1)
                    )
                )
        if not found:
            self.warnings.append(f"{self.source}: no deployment has 'triggers:'; nothing imported")

    def _automation(self, raw: Any, where: str) -> Automation:
        if not isinstance(raw, dict):
            raise self._error(where, "an automation must be a mapping with name, trigger, actions")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self._error(path(where, "name"), "required: the automation's name")
        name = self._unique(name)
        if "trigger" not in raw:
            raise self._error(path(where, "trigger"), f"required: {name!r} has no trigger")
        for key in raw:
            if key not in _AUTOMATION_KEYS:
                self._warn(name, str(key), "not a Prefect automation field; dropped")
        tags = raw.get("tags")
        if tags:
            self._warn(name, "tags", f"runbell automations have no tags; dropped {tags!r}")
        owner = raw.get("owner_resource")
        if owner:
            self._warn(
                name, "owner_resource", f"runbell automations have no owner; dropped {owner!r}"
            )

        body: dict[str, Any] = {"name": name}
        description = raw.get("description")
        if description:
            body["description"] = self._string(description, path(where, "description"))
        body.update(self._enabled(raw, where))
        body["trigger"] = self._trigger(raw["trigger"], path(where, "trigger"), name)
        actions: list[dict[str, Any]] = []
        for key in ("actions", "actions_on_trigger"):
            actions.extend(self._actions(raw.get(key), path(where, key), name, key))
        resolve = self._actions(
            raw.get("actions_on_resolve"),
            path(where, "actions_on_resolve"),
            name,
            "actions_on_resolve",
        )
        self._finish(body, actions, resolve, name)
        prefect_id = raw.get("id")
        if isinstance(prefect_id, str):
            self.ids[prefect_id] = name
        return Automation(body)

    def _deployment_trigger(
        self, deployment: str, raw: Any, position: int, where: str
    ) -> Automation:
        if not isinstance(raw, dict):
            raise self._error(where, "a deployment trigger must be a mapping")
        given = raw.get("name")
        if given is not None and not isinstance(given, str):
            raise self._error(path(where, "name"), 'must be a text string; quote it, e.g. "name"')
        # Prefect's own default name (prefect/cli/deploy.py _initialize_deployment_triggers).
        name = self._unique(
            f"{deployment} / {given}" if given else f"{deployment}__automation_{position}"
        )
        body: dict[str, Any] = {"name": name}
        description = raw.get("description")
        if description:
            body["description"] = self._string(description, path(where, "description"))
        body.update(self._enabled(raw, where))
        trigger_raw = {k: v for k, v in raw.items() if k not in _DEPLOYMENT_TRIGGER_KEYS}
        trigger = self._trigger(trigger_raw, where, name)
        if self.scope:
            scope = {"resource.role": "deployment", "resource.name": deployment}
            existing = trigger.get("match_related")
            if existing is None:
                trigger["match_related"] = scope
            else:
                trigger["match_related"] = [
                    *(existing if isinstance(existing, list) else [existing]),
                    scope,
                ]
            self._warn(
                name,
                "trigger.match_related",
                f"narrowed to deployment {deployment!r} by resource.name (its Prefect id is "
                "assigned at deploy time); Prefect does not narrow deployment triggers",
            )
        body["trigger"] = self._reorder_trigger(trigger)
        action: dict[str, Any] = {"type": "run-deployment", "deployment": deployment}
        action.update(self._run_options(raw, where, name, ""))
        self._warn(
            name,
            "actions[0] (run-deployment)",
            f"runs deployment {deployment!r} by name; check runbell resolves it to the right "
            "flow/deployment (ids are assigned at deploy time)",
        )
        self._finish(body, [action], [], name)
        return Automation(body)

    def _finish(
        self,
        body: dict[str, Any],
        actions: list[dict[str, Any]],
        resolve: list[dict[str, Any]],
        name: str,
    ) -> None:
        if not actions:
            actions = [{"type": "do-nothing"}]
            self._warn(
                name, "actions", "no action runbell can run; 'do-nothing' added (runbell needs one)"
            )
        body["actions"] = actions
        if resolve:
            body["actions_on_resolve"] = resolve

    def _enabled(self, raw: dict[str, Any], where: str) -> dict[str, bool]:
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self._error(path(where, "enabled"), "must be true or false")
        return {} if enabled else {"enabled": False}

    def _unique(self, name: str) -> str:
        candidate, counter = name, 2
        while candidate in self.names:
            candidate = f"{name} ({counter})"
            counter += 1
        if candidate != name:
            self._warn(
                name,
                "name",
                f"used more than once; renamed to {candidate!r} (runbell names are unique)",
            )
        self.names.add(candidate)
        return candidate

    def render(self) -> str:
        document: dict[str, Any] = {}
        if self.channels:
            document["channels"] = {key: self.channels[key] for key in sorted(self.channels)}
        document["automations"] = [automation.body for automation in self.automations]
        header = f"# Imported from Prefect ({self.source}) by `runbell import prefect`.\n"
        if self.warnings:
            header += f"# {len(self.warnings)} warning(s) were printed on stderr; review them.\n"
        return header + dump(document)
