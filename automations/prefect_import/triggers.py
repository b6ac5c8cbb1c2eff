"""Mapping Prefect triggers (event, compound, sequence, metric) to runbell's."""

from __future__ import annotations

from typing import Any

from automations.prefect_import.common import (
    ConverterBase,
    discriminate,
    duration_out,
    path,
    strip,
    strip_id,
    to_seconds,
    trim,
)

_EVENT_KEYS = frozenset(
    {"type", "id", "match", "match_related", "after", "expect", "for_each", "posture",
     "threshold", "within"}
)  # fmt: skip


class TriggerMapping(ConverterBase):
    def _trigger(self, raw: Any, where: str, name: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self._error(where, "a trigger must be a mapping with 'type:'")
        kind = raw.get("type", discriminate(raw))
        if kind == "event":
            return self._event_trigger(raw, where, name)
        if kind in ("compound", "sequence"):
            return self._composite_trigger(raw, where, name, kind)
        if kind == "metric":
            return self._metric_trigger(raw, where, name)
        raise self._error(
            path(where, "type"),
            f"unknown trigger type {kind!r}; Prefect's are event, compound, sequence, metric",
        )

    def _event_trigger(self, raw: dict[str, Any], where: str, name: str) -> dict[str, Any]:
        for key in raw:
            if key not in _EVENT_KEYS:
                self._warn(name, trim(path(where, str(key))), "not an event trigger field; dropped")
        out: dict[str, Any] = {"type": "event"}
        posture = raw.get("posture", "Reactive")
        if posture not in ("Reactive", "Proactive"):
            raise self._error(path(where, "posture"), "must be Reactive or Proactive")
        out["posture"] = posture
        for key in ("expect", "after"):
            names = self._names(raw.get(key), path(where, key))
            if names:
                out[key] = names
        out.update(self._label_filters(raw, where, name))
        for_each = self._for_each(raw.get("for_each"), path(where, "for_each"))
        if for_each:
            out["for_each"] = for_each
        threshold = raw.get("threshold", 1)
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise self._error(path(where, "threshold"), "must be a whole number")
        if threshold < 1:
            if posture == "Reactive":
                self._warn(
                    name,
                    trim(path(where, "threshold")),
                    f"{threshold} fires on every matching event in Prefect; runbell needs >= 1, "
                    "set to 1",
                )
            else:
                self._warn(
                    name,
                    trim(path(where, "threshold")),
                    f"{threshold} never fires a Proactive trigger in Prefect; runbell needs >= 1, "
                    "set to 1 (fires when no expected event arrives): review it",
                )
            threshold = 1
        out["threshold"] = threshold
        within = to_seconds(raw.get("within", 0), self, path(where, "within"))
        if posture == "Proactive" and within == 0:
            within = 10.0  # Prefect's default for Proactive triggers.
        if within:
            out["within"] = duration_out(within)
        self._posture_warnings(out, name, where)
        return self._reorder_trigger(out)

    def _composite_trigger(
        self, raw: dict[str, Any], where: str, name: str, kind: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind}
        triggers = raw.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            raise self._error(path(where, "triggers"), f"a {kind} trigger needs a list of triggers")
        if kind == "compound":
            require = raw.get("require")
            valid = require in ("any", "all") or (
                isinstance(require, int)
                and not isinstance(require, bool)
                and 1 <= require <= len(triggers)
            )
            if not valid:
                raise self._error(
                    path(where, "require"),
                    f"must be any, all, or a number from 1 to {len(triggers)}",
                )
            out["require"] = require
        within = raw.get("within")
        if within is not None:
            seconds = to_seconds(within, self, path(where, "within"))
            if seconds:
                out["within"] = duration_out(seconds)
        base = path(where, "triggers")
        out["triggers"] = [
            self._trigger(child, path(base, index), name) for index, child in enumerate(triggers)
        ]
        for key in raw:
            if key not in ("type", "id", "triggers", "require", "within"):
                self._warn(
                    name, trim(path(where, str(key))), f"not a {kind} trigger field; dropped"
                )
        return out

    def _metric_trigger(self, raw: dict[str, Any], where: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "metric"}
        out.update(self._label_filters(raw, where, name))
        metric = raw.get("metric")
        if not isinstance(metric, dict):
            raise self._error(
                path(where, "metric"),
                "a metric trigger needs 'metric:' (name, operator, threshold)",
            )
        query: dict[str, Any] = {}
        for key in ("name", "operator", "threshold"):
            if key not in metric:
                raise self._error(path(path(where, "metric"), key), "required")
            query[key] = metric[key]
        for key in ("range", "firing_for"):
            query[key] = self._duration(metric.get(key, 300), path(path(where, "metric"), key))
        out["metric"] = query
        self._warn(
            name,
            trim(where),
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
                trim(where),
                "Proactive heartbeat (zombie) trigger: in runbell a heartbeat just after the run's "
                "terminal state does not make the run a zombie; in Prefect it can (#21932)",
            )
        elif not trigger.get("after"):
            self._warn(
                name,
                trim(where),
                f"Proactive without 'after': runbell alarms {within} after the last expected "
                "event; Prefect may alarm up to two windows later",
            )

    def _strings(self, raw: Any, where: str, message: str) -> list[str]:
        """One string or a list of them (none when absent); else an error with ``message``."""
        if raw is None:
            return []
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self._error(where, message)
        return values

    def _names(self, raw: Any, where: str) -> list[str]:
        out: list[str] = []
        for value in self._strings(raw, where, "must be an event name or a list of event names"):
            negated = value.startswith("!")
            mapped = ("!" if negated else "") + strip(value[1:] if negated else value)
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
            new_key = strip(key)
            if new_key in out:
                raise self._error(
                    path(where, key),
                    f"both {new_key!r} and {key!r}: they collide once 'prefect.' is dropped",
                )
            globs = [value] if isinstance(value, str) else value
            if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
                raise self._error(path(where, key), "must be a glob or a list of globs")
            mapped = [strip_id(g) if new_key == "resource.id" else g for g in globs]
            for glob in mapped:
                body = glob.removeprefix("!")
                if "?" in body or "*" in body[:-1]:
                    self._warn(
                        name,
                        trim(path(where, key)),
                        f"{glob!r}: Prefect compares this literally (only a trailing '*' is a "
                        "wildcard for labels); runbell treats '*' and '?' as wildcards",
                    )
            out[new_key] = mapped[0] if isinstance(value, str) else mapped
        return out

    def _label_filters(self, raw: dict[str, Any], where: str, name: str) -> dict[str, Any]:
        """A trigger's ``match`` and ``match_related``, left out when empty."""
        out: dict[str, Any] = {}
        if "match" in raw:
            match = self._labels(raw["match"], path(where, "match"), name)
            if match:
                out["match"] = match
        if "match_related" in raw:
            related = self._match_related(raw["match_related"], path(where, "match_related"), name)
            if related:
                out["match_related"] = related
        return out

    def _match_related(self, raw: Any, where: str, name: str) -> Any:
        if isinstance(raw, dict):
            return self._labels(raw, where, name) or None
        if isinstance(raw, list):
            specs = [self._labels(item, path(where, index), name) for index, item in enumerate(raw)]
            specs = [spec for spec in specs if spec]
            return specs or None
        raise self._error(where, "must be a mapping of labels or a list of them")

    def _for_each(self, raw: Any, where: str) -> list[str]:
        out: list[str] = []
        for value in self._strings(raw, where, "must be a label key or a list of label keys"):
            if value.startswith("related:"):
                parts = value.split(":", 2)
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    raise self._error(where, f"{value!r}: write related:<role>:<label>")
                mapped = f"related:{parts[1]}:{strip(parts[2])}"
            else:
                mapped = strip(value)
            if mapped not in out:
                out.append(mapped)
        return out
