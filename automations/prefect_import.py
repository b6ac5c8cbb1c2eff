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

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "ACTION_MAP",
    "ImportResult",
    "PrefectImportError",
    "convert",
]

PREFIX = "prefect."

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

# Names a runbell message template can use (automations/dispatcher.py render_message).
_TEMPLATE_NAMES = frozenset({"automation", "event", "events", "firing", "labels"})
_EVENT_FIELDS = frozenset(
    {"id", "occurred", "received", "event", "resource", "related", "payload", "follows"}
)
_AUTOMATION_FIELDS = frozenset({"name", "description"})
_JINJA = ImmutableSandboxedEnvironment()
_JINJA_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_QUOTED_PREFIX = re.compile(r"""(['"])prefect\.""")
_RESOURCE_ATTR = re.compile(r"\bevent\.resource\.(id|name|role)\b(?!\s*\()")

# Prefect event names (prefix dropped) that the prefix/glob checks compare patterns
# against, together with every event name written in the document. Not exhaustive.
_STATES = (
    "Scheduled",
    "Late",
    "AwaitingRetry",
    "AwaitingConcurrencySlot",
    "Pending",
    "Running",
    "Retrying",
    "Paused",
    "Suspended",
    "Resuming",
    "Cancelling",
    "Cancelled",
    "Completed",
    "Failed",
    "Crashed",
)
_KNOWN_EVENTS: tuple[str, ...] = (
    *(f"flow-run.{state}" for state in _STATES),
    "flow-run.heartbeat",
    *(f"task-run.{state}" for state in _STATES),
    "deployment.ready",
    "deployment.not-ready",
    "deployment.disabled",
    "work-pool.ready",
    "work-pool.not-ready",
    "work-pool.paused",
    "work-queue.ready",
    "work-queue.not-ready",
    "work-queue.paused",
    "automation.triggered",
    "automation.resolved",
    "automation.action.triggered",
    "automation.action.executed",
    "automation.action.failed",
)

_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_CLOCK_DURATION = re.compile(
    r"^(?:(?P<d>\d+) days?,?\s*)?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)$"
)
_UNIT_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60))

_AUTOMATION_KEYS = frozenset(
    {"name", "description", "enabled", "trigger", "actions", "actions_on_trigger",
     "actions_on_resolve", "tags", "owner_resource", "id", "created", "updated"}
)  # fmt: skip
_EVENT_KEYS = frozenset(
    {"type", "id", "match", "match_related", "after", "expect", "for_each", "posture",
     "threshold", "within"}
)  # fmt: skip
_DEPLOYMENT_TRIGGER_KEYS = frozenset(
    {"name", "description", "enabled", "parameters", "job_variables", "schedule_after"}
)


class PrefectImportError(ValueError):
    """The Prefect document cannot be imported; names the source, line and path."""

    def __init__(self, source: str, path: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.path = path
        self.line = line
        self.reason = message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


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
    data = _parse(text, source)
    converter = _Converter(source, scope_deployment_triggers)
    converter.run(data)
    return ImportResult(yaml=converter.render(), warnings=converter.warnings)


# -- parsing -----------------------------------------------------------------


def _parse(text: str, source: str) -> Any:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                raise PrefectImportError(
                    source, "", f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno
                ) from None
            # A YAML flow mapping is not always JSON; let YAML have a go.
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "syntax error"
        raise PrefectImportError(source, "", f"invalid YAML or JSON: {what}", line) from None
    except yaml.YAMLError as exc:
        raise PrefectImportError(source, "", f"invalid YAML or JSON: {exc}") from None


def _path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


# -- conversion --------------------------------------------------------------


@dataclass
class _Automation:
    body: dict[str, Any]


class _Converter:
    def __init__(self, source: str, scope_deployment_triggers: bool) -> None:
        self.source = source
        self.scope = scope_deployment_triggers
        self.warnings: list[str] = []
        self.channels: dict[str, dict[str, str]] = {}
        self.automations: list[_Automation] = []
        self.names: set[str] = set()
        self.event_names: set[str] = set()
        # Prefect automation id → runbell name, for pause-/resume-automation.
        self.ids: dict[str, str] = {}
        self.pending_automation_refs: list[tuple[dict[str, Any], str, str, str]] = []

    # -- document shapes ------------------------------------------------------

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
            self.automations.append(self._automation(item, _path(base, index)))

    def _collect_names(self, item: Any) -> None:
        """Remember every event name in the document for the prefix/glob checks."""
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("expect", "after"):
                    for name in value if isinstance(value, list) else [value]:
                        if isinstance(name, str) and "*" not in name and "?" not in name:
                            self.event_names.add(_strip(name.removeprefix("!")))
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
            where = _path("deployments", index)
            if not isinstance(deployment, dict):
                raise self._error(where, "must be a mapping with 'name:' and 'triggers:'")
            triggers = deployment.get("triggers")
            if triggers is None:
                continue
            name = deployment.get("name")
            if not isinstance(name, str) or not name:
                raise self._error(_path(where, "name"), "a deployment with triggers needs a name")
            if not isinstance(triggers, list):
                raise self._error(_path(where, "triggers"), "must be a list of triggers")
            for position, trigger in enumerate(triggers, start=1):
                found = True
                self.automations.append(
                    self._deployment_trigger(
                        name, trigger, position, _path(_path(where, "triggers"), position - 1)
                    )
                )
        if not found:
            self.warnings.append(f"{self.source}: no deployment has 'triggers:'; nothing imported")

    # -- automations ----------------------------------------------------------

    def _automation(self, raw: Any, where: str) -> _Automation:
        if not isinstance(raw, dict):
            raise self._error(where, "an automation must be a mapping with name, trigger, actions")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self._error(_path(where, "name"), "required: the automation's name")
        name = self._unique(name)
        if "trigger" not in raw:
            raise self._error(_path(where, "trigger"), f"required: {name!r} has no trigger")
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
            body["description"] = self._string(description, _path(where, "description"))
        body.update(self._enabled(raw, where))
        body["trigger"] = self._trigger(raw["trigger"], _path(where, "trigger"), name)
        actions: list[dict[str, Any]] = []
        for key in ("actions", "actions_on_trigger"):
            actions.extend(self._actions(raw.get(key), _path(where, key), name, key))
        resolve = self._actions(
            raw.get("actions_on_resolve"),
            _path(where, "actions_on_resolve"),
            name,
            "actions_on_resolve",
        )
        self._finish(body, actions, resolve, name)
        prefect_id = raw.get("id")
        if isinstance(prefect_id, str):
            self.ids[prefect_id] = name
        return _Automation(body)

    def _deployment_trigger(
        self, deployment: str, raw: Any, position: int, where: str
    ) -> _Automation:
        if not isinstance(raw, dict):
            raise self._error(where, "a deployment trigger must be a mapping")
        given = raw.get("name")
        if given is not None and not isinstance(given, str):
            raise self._error(_path(where, "name"), 'must be a text string; quote it, e.g. "name"')
        # Prefect's own default name (prefect/cli/deploy.py _initialize_deployment_triggers).
        name = self._unique(
            f"{deployment} / {given}" if given else f"{deployment}__automation_{position}"
        )
        body: dict[str, Any] = {"name": name}
        description = raw.get("description")
        if description:
            body["description"] = self._string(description, _path(where, "description"))
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
        for key in ("parameters", "job_variables"):
            value = raw.get(key)
            if value:
                action[key] = self._rewrite_values(value, name, f"{key}")
        schedule_after = raw.get("schedule_after")
        if schedule_after:
            action["schedule_after"] = _duration_out(
                _seconds(schedule_after, self, _path(where, "schedule_after"))
            )
        self._warn(
            name,
            "actions[0] (run-deployment)",
            f"runs deployment {deployment!r} by name; check runbell resolves it to the right "
            "flow/deployment (ids are assigned at deploy time)",
        )
        self._finish(body, [action], [], name)
        return _Automation(body)

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
            raise self._error(_path(where, "enabled"), "must be true or false")
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

    # -- triggers -------------------------------------------------------------

    def _trigger(self, raw: Any, where: str, name: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self._error(where, "a trigger must be a mapping with 'type:'")
        kind = raw.get("type", _discriminate(raw))
        if kind == "event":
            return self._event_trigger(raw, where, name)
        if kind in ("compound", "sequence"):
            return self._composite_trigger(raw, where, name, kind)
        if kind == "metric":
            return self._metric_trigger(raw, where, name)
        raise self._error(
            _path(where, "type"),
            f"unknown trigger type {kind!r}; Prefect's are event, compound, sequence, metric",
        )

    def _event_trigger(self, raw: dict[str, Any], where: str, name: str) -> dict[str, Any]:
        for key in raw:
            if key not in _EVENT_KEYS:
                self._warn(
                    name, _trim(_path(where, str(key))), "not an event trigger field; dropped"
                )
        out: dict[str, Any] = {"type": "event"}
        posture = raw.get("posture", "Reactive")
        if posture not in ("Reactive", "Proactive"):
            raise self._error(_path(where, "posture"), "must be Reactive or Proactive")
        out["posture"] = posture
        for key in ("expect", "after"):
            names = self._names(raw.get(key), _path(where, key))
            if names:
                out[key] = names
        if "match" in raw:
            match = self._labels(raw["match"], _path(where, "match"), name)
            if match:
                out["match"] = match
        if "match_related" in raw:
            related = self._match_related(raw["match_related"], _path(where, "match_related"), name)
            if related:
                out["match_related"] = related
        for_each = self._for_each(raw.get("for_each"), _path(where, "for_each"))
        if for_each:
            out["for_each"] = for_each
        threshold = raw.get("threshold", 1)
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise self._error(_path(where, "threshold"), "must be a whole number")
        if threshold < 1:
            if posture == "Reactive":
                self._warn(
                    name,
                    _trim(_path(where, "threshold")),
                    f"{threshold} fires on every matching event in Prefect; runbell needs >= 1, "
                    "set to 1",
                )
            else:
                self._warn(
                    name,
                    _trim(_path(where, "threshold")),
                    f"{threshold} never fires a Proactive trigger in Prefect; runbell needs >= 1, "
                    "set to 1 (fires when no expected event arrives): review it",
                )
            threshold = 1
        out["threshold"] = threshold
        within = _seconds(raw.get("within", 0), self, _path(where, "within"))
        if posture == "Proactive" and within == 0:
            within = 10.0  # Prefect's default for Proactive triggers.
        if within:
            out["within"] = _duration_out(within)
        self._posture_warnings(out, name, where)
        return self._reorder_trigger(out)

    def _composite_trigger(
        self, raw: dict[str, Any], where: str, name: str, kind: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind}
        triggers = raw.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            raise self._error(
                _path(where, "triggers"), f"a {kind} trigger needs a list of triggers"
            )
        if kind == "compound":
            require = raw.get("require")
            valid = require in ("any", "all") or (
                isinstance(require, int)
                and not isinstance(require, bool)
                and 1 <= require <= len(triggers)
            )
            if not valid:
                raise self._error(
                    _path(where, "require"),
                    f"must be any, all, or a number from 1 to {len(triggers)}",
                )
            out["require"] = require
        within = raw.get("within")
        if within is not None:
            seconds = _seconds(within, self, _path(where, "within"))
            if seconds:
                out["within"] = _duration_out(seconds)
        base = _path(where, "triggers")
        out["triggers"] = [
            self._trigger(child, _path(base, index), name) for index, child in enumerate(triggers)
        ]
        for key in raw:
            if key not in ("type", "id", "triggers", "require", "within"):
                self._warn(
                    name, _trim(_path(where, str(key))), f"not a {kind} trigger field; dropped"
                )
        return out

    def _metric_trigger(self, raw: dict[str, Any], where: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "metric"}
        if "match" in raw:
            match = self._labels(raw["match"], _path(where, "match"), name)
            if match:
                out["match"] = match
        if "match_related" in raw:
            related = self._match_related(raw["match_related"], _path(where, "match_related"), name)
            if related:
                out["match_related"] = related
        metric = raw.get("metric")
        if not isinstance(metric, dict):
            raise self._error(
                _path(where, "metric"),
                "a metric trigger needs 'metric:' (name, operator, threshold)",
            )
        query: dict[str, Any] = {}
        for key in ("name", "operator", "threshold"):
            if key not in metric:
                raise self._error(_path(_path(where, "metric"), key), "required")
            query[key] = metric[key]
        for key in ("range", "firing_for"):
            seconds = _seconds(metric.get(key, 300), self, _path(_path(where, "metric"), key))
            query[key] = _duration_out(seconds)
        out["metric"] = query
        self._warn(
            name,
            _trim(where),
            "metric trigger (Prefect Cloud only): runbell computes the metric from the run "
            "events it receives; values can differ from Prefect Cloud's",
        )
        return out

    def _reorder_trigger(self, trigger: dict[str, Any]) -> dict[str, Any]:
        order = (
            "type",
            "posture",
            "expect",
            "after",
            "match",
            "match_related",
            "for_each",
            "threshold",
            "within",
        )
        return {key: trigger[key] for key in order if key in trigger} | {
            key: value for key, value in trigger.items() if key not in order
        }

    def _posture_warnings(self, trigger: dict[str, Any], name: str, where: str) -> None:
        if trigger["posture"] != "Proactive":
            return
        within = trigger.get("within", "10s")
        heartbeat = [
            n for n in (*trigger.get("after", []), *trigger.get("expect", [])) if "heartbeat" in n
        ]
        if heartbeat:
            self._warn(
                name,
                _trim(where),
                "Proactive heartbeat (zombie) trigger: in runbell a heartbeat just after the run's "
                "terminal state does not make the run a zombie; in Prefect it can (#21932)",
            )
        elif not trigger.get("after"):
            self._warn(
                name,
                _trim(where),
                f"Proactive without 'after': runbell alarms {within} after the last expected "
                "event; Prefect may alarm up to two windows later",
            )

    # -- names and labels -----------------------------------------------------

    def _names(self, raw: Any, where: str) -> list[str]:
        if raw is None:
            return []
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self._error(where, "must be an event name or a list of event names")
        out: list[str] = []
        for value in values:
            negated = value.startswith("!")
            mapped = ("!" if negated else "") + _strip(value[1:] if negated else value)
            if mapped not in out:
                out.append(mapped)
        return out

    def _labels(self, raw: Any, where: str, name: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self._error(where, "must be a mapping of label to glob (or list of globs)")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise self._error(where, f"label keys must be text, not {key!r}")
            new_key = _strip(key)
            if new_key in out:
                raise self._error(
                    _path(where, key),
                    f"both {new_key!r} and {key!r}: they collide once 'prefect.' is dropped",
                )
            globs = [value] if isinstance(value, str) else value
            if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
                raise self._error(_path(where, key), "must be a glob or a list of globs")
            mapped = [_strip_id(g) if new_key == "resource.id" else g for g in globs]
            for glob in mapped:
                body = glob.removeprefix("!")
                if "?" in body or "*" in body[:-1]:
                    self._warn(
                        name,
                        _trim(_path(where, key)),
                        f"{glob!r}: Prefect compares this literally (only a trailing '*' is a "
                        "wildcard for labels); runbell treats '*' and '?' as wildcards",
                    )
            out[new_key] = mapped[0] if isinstance(value, str) else mapped
        return out

    def _match_related(self, raw: Any, where: str, name: str) -> Any:
        if isinstance(raw, dict):
            return self._labels(raw, where, name) or None
        if isinstance(raw, list):
            specs = [
                self._labels(item, _path(where, index), name) for index, item in enumerate(raw)
            ]
            specs = [spec for spec in specs if spec]
            return specs or None
        raise self._error(where, "must be a mapping of labels or a list of them")

    def _for_each(self, raw: Any, where: str) -> list[str]:
        if raw is None:
            return []
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self._error(where, "must be a label key or a list of label keys")
        out: list[str] = []
        for value in values:
            if value.startswith("related:"):
                parts = value.split(":", 2)
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    raise self._error(where, f"{value!r}: write related:<role>:<label>")
                mapped = f"related:{parts[1]}:{_strip(parts[2])}"
            else:
                mapped = _strip(value)
            if mapped not in out:
                out.append(mapped)
        return out

    def _pattern_warnings(self) -> None:
        candidates = set(_KNOWN_EVENTS) | self.event_names
        for automation in self.automations:
            name = automation.body["name"]
            for where, trigger in _event_triggers(automation.body["trigger"], "trigger"):
                for key in ("expect", "after"):
                    for pattern in trigger.get(key, []):
                        self._pattern_warning(name, _path(where, key), pattern, candidates)

    def _pattern_warning(self, name: str, where: str, pattern: str, candidates: set[str]) -> None:
        if pattern.startswith("!"):
            return
        prefect = re.compile(re.escape(pattern).replace("\\*", ".+")).match
        runbell = re.compile(
            "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
            re.DOTALL,
        ).fullmatch
        empty = pattern.replace("*", "")
        if "*" in pattern and not empty.endswith((".", "-", "_")) and empty:
            self._warn(
                name,
                where,
                f"{pattern!r} now also matches {empty!r}: runbell's '*' matches the empty string, "
                "Prefect's (compiled to '.+') does not",
            )
        runbell_only = sorted(c for c in candidates if runbell(c) and not prefect(c) and c != empty)
        if runbell_only:
            self._warn(
                name,
                where,
                f"{pattern!r} now also matches {runbell_only[0]!r}, which Prefect's pattern did "
                "not ('?' is a literal character in Prefect)",
            )
        prefix_only = sorted(c for c in candidates if prefect(c) and not runbell(c))
        if prefix_only:
            self._warn(
                name,
                where,
                f"{pattern!r}: Prefect matched event names by prefix (e.g. {prefix_only[0]!r}); "
                "runbell matches the whole name, add '*' to keep the prefix match",
            )

    # -- actions --------------------------------------------------------------

    def _actions(self, raw: Any, where: str, name: str, key: str) -> list[dict[str, Any]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self._error(where, "must be a list of actions")
        out: list[dict[str, Any]] = []
        for index, action in enumerate(raw):
            converted = self._action(action, _path(where, index), name, f"{key}[{index}]")
            if converted is not None:
                out.append(converted)
        return out

    def _action(self, raw: Any, where: str, name: str, field_name: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            raise self._error(where, "an action must be a mapping with 'type:'")
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise self._error(
                _path(where, "type"), "required: the action type, e.g. send-notification"
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
                raise self._error(_path(where, "body"), "required: the notification text")
            out["body"] = self._template(body, name, f"{field_name}.body")
        elif kind == "call-webhook":
            channel = self._block_channel(raw, where, name, label, add_channel=False)
            out["url"] = self._env_ref(channel)
            payload = raw.get("payload")
            if isinstance(payload, str) and payload:
                out["payload"] = self._template(payload, name, f"{field_name}.payload")
        elif kind == "run-deployment":
            out.update(self._selected(raw, where, "deployment_id", name, label))
            for key in ("parameters", "job_variables"):
                value = raw.get(key)
                if value:
                    out[key] = self._rewrite_values(value, name, f"{field_name}.{key}")
            schedule_after = raw.get("schedule_after")
            if schedule_after:
                out["schedule_after"] = _duration_out(
                    _seconds(schedule_after, self, _path(where, "schedule_after"))
                )
        elif kind == "change-flow-run-state":
            state = raw.get("state")
            if not isinstance(state, str):
                raise self._error(_path(where, "state"), "required: the state type, e.g. FAILED")
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
            raise self._error(_path(where, "source"), "must be selected or inferred")
        value = raw.get(id_key)
        if not isinstance(value, str) or not value:
            raise self._error(_path(where, id_key), "required when source is selected")
        return {id_key: value}

    def _block_channel(
        self, raw: dict[str, Any], where: str, name: str, label: str, *, add_channel: bool = True
    ) -> str:
        block = raw.get("block_document_id")
        if not isinstance(block, str) or not block:
            raise self._error(_path(where, "block_document_id"), "required: the Prefect block id")
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

    # -- templates ------------------------------------------------------------

    def _rewrite_values(self, value: Any, name: str, where: str) -> Any:
        if isinstance(value, str):
            return self._template(value, name, where)
        if isinstance(value, dict):
            return {
                k: self._rewrite_values(v, name, _path(where, str(k))) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._rewrite_values(v, name, _path(where, i)) for i, v in enumerate(value)]
        return value

    def _template(self, text: str, name: str, where: str) -> str:
        if "{" not in text:
            return text

        def rewrite(found: re.Match[str]) -> str:
            block = _QUOTED_PREFIX.sub(r"\1", found.group(0))
            return _RESOURCE_ATTR.sub(lambda m: f"event.resource['resource.{m.group(1)}']", block)

        out = _JINJA_BLOCK.sub(rewrite, text)
        try:
            tree = _JINJA.parse(out)
        except TemplateSyntaxError as exc:
            self._warn(name, where, f"template does not parse ({exc.message}); copied as is")
            return out
        missing: set[str] = set()
        for name_node in tree.find_all(nodes.Name):
            if name_node.ctx == "load" and name_node.name not in _TEMPLATE_NAMES:
                missing.add(name_node.name)
        assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        missing -= assigned
        if missing:
            self._warn(
                name,
                where,
                f"template uses {', '.join(sorted(missing))}, which runbell does not provide "
                "(it renders event, events, automation, firing, labels); read them from "
                "event.resource / event.related",
            )
        for node in tree.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name):
                fields = {"event": _EVENT_FIELDS, "automation": _AUTOMATION_FIELDS}.get(
                    node.node.name
                )
                if (
                    fields is not None
                    and node.attr not in fields
                    and node.node.name not in assigned
                ):
                    self._warn(
                        name,
                        where,
                        f"template uses {node.node.name}.{node.attr}, which runbell does not "
                        "provide",
                    )
        return out

    # -- output ---------------------------------------------------------------

    def _warn(self, name: str, where: str, message: str) -> None:
        line = f"{name}: {where}: {message}" if where else f"{name}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)

    def _string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self._error(where, 'must be a text string; quote it, e.g. "text"')
        return value

    def _error(self, where: str, message: str) -> PrefectImportError:
        return PrefectImportError(self.source, where, message)

    def render(self) -> str:
        document: dict[str, Any] = {}
        if self.channels:
            document["channels"] = {key: self.channels[key] for key in sorted(self.channels)}
        document["automations"] = [automation.body for automation in self.automations]
        header = f"# Imported from Prefect ({self.source}) by `runbell import prefect`.\n"
        if self.warnings:
            header += f"# {len(self.warnings)} warning(s) were printed on stderr; review them.\n"
        dumped = yaml.dump(
            document,
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=4096,
        )
        return header + dumped


# -- helpers -----------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, as runbell's examples are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _discriminate(raw: dict[str, Any]) -> str:
    """Prefect's ``trigger_discriminator``: the type implied when ``type`` is missing."""
    if "triggers" in raw:
        return "compound" if "require" in raw else "sequence"
    if raw.get("posture") == "Metric":
        return "metric"
    return "event"


def _strip(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def _strip_id(glob: str) -> str:
    negated = glob.startswith("!")
    body = glob[1:] if negated else glob
    return ("!" if negated else "") + _strip(body)


def _trim(where: str) -> str:
    """A trigger path relative to the automation (drops the document prefix)."""
    if where.startswith("deployments["):
        return re.sub(r"^deployments\[\d+\]\.triggers\[\d+\]", "trigger", where)
    index = where.find("trigger")
    return where[index:] if index >= 0 else where


def _event_triggers(trigger: dict[str, Any], where: str) -> Iterable[tuple[str, dict[str, Any]]]:
    if trigger.get("type") == "event":
        yield where, trigger
    for index, child in enumerate(trigger.get("triggers", [])):
        yield from _event_triggers(child, f"{where}.triggers[{index}]")


def _seconds(value: Any, converter: _Converter, where: str) -> float:
    if isinstance(value, bool):
        raise converter._error(where, "must be a duration in seconds, e.g. 600 or PT10M")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        iso = _ISO_DURATION.match(text)
        clock = _CLOCK_DURATION.match(text)
        unit = _UNIT_DURATION.match(text)
        if iso and text != "P" and not text.endswith("T"):
            parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
            seconds = (
                parts.get("w", 0) * 604800
                + parts.get("d", 0) * 86400
                + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60
                + parts.get("s", 0)
            )
        elif clock:
            seconds = (
                float(clock["d"] or 0) * 86400
                + float(clock["h"]) * 3600
                + float(clock["m"]) * 60
                + float(clock["s"])
            )
        elif unit:
            seconds = float(unit[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit[2]]
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise converter._error(
                    where, f"{value!r} is not a duration; write seconds (600) or ISO 8601 (PT10M)"
                ) from None
    else:
        raise converter._error(where, "must be a duration in seconds, e.g. 600 or PT10M")
    if seconds < 0:
        raise converter._error(where, "must not be negative")
    return seconds


def _duration_out(seconds: float) -> str | float:
    if seconds != int(seconds):
        return seconds
    whole = int(seconds)
    for unit, size in _UNITS:
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
