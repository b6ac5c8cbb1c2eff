"""Reading Prefect's YAML or JSON, and writing runbell's YAML."""

from __future__ import annotations

import json
from typing import Any

import yaml

from automations.prefect_import.common import PrefectImportError


def parse(text: str, source: str) -> Any:
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


def dump(document: dict[str, Any]) -> str:
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, as runbell's examples are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
