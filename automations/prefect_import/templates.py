"""Rewriting Prefect's Jinja templates for runbell, with a warning for what it cannot map."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from automations.prefect_import.common import ConverterBase, path

# Names a runbell message template can use (automations/delivery/dispatcher.py render_message).
_TEMPLATE_NAMES = frozenset({"automation", "event", "events", "firing", "labels"})
_EVENT_FIELDS = frozenset(
    {"id", "occurred", "received", "event", "resource", "related", "payload", "follows"}
)
_AUTOMATION_FIELDS = frozenset({"name", "description"})
_JINJA = ImmutableSandboxedEnvironment()
_JINJA_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_QUOTED_PREFIX = re.compile(r"""(['"])prefect\.""")
_RESOURCE_ATTR = re.compile(r"\bevent\.resource\.(id|name|role)\b(?!\s*\()")


class TemplateRewriting(ConverterBase):
    def _rewrite_values(self, value: Any, name: str, where: str) -> Any:
        if isinstance(value, str):
            return self._template(value, name, where)
        if isinstance(value, dict):
            return {k: self._rewrite_values(v, name, path(where, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self._rewrite_values(v, name, path(where, i)) for i, v in enumerate(value)]
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
