"""Reading Prefect's YAML or JSON, and writing runbell's YAML.

Input is read within :mod:`automations.spec.yaml_safe`'s limits: no tags but the
standard ones, no alias loops, at most 100,000 values made by aliases and 100
levels of nesting (JSON too); the first such problem is the error, with its line.
"""

from __future__ import annotations

import json
from functools import reduce
from typing import Any

import yaml

from automations.prefect_import.common import PrefectImportError, path
from automations.spec.yaml_safe import MAX_DEPTH, Loc, PlainBuilder, compose


def parse(text: str, source: str) -> Any:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except RecursionError:
            raise PrefectImportError(source, "", _TOO_DEEP) from None
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                raise PrefectImportError(
                    source, "", f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno
                ) from None
            # A YAML flow mapping is not always JSON; let YAML have a go.
        else:
            if _too_deep(data):
                raise PrefectImportError(source, "", _TOO_DEEP)
            return data
    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "syntax error"
        raise PrefectImportError(source, "", f"invalid YAML or JSON: {what}", line) from None
    except yaml.YAMLError as exc:
        raise PrefectImportError(source, "", f"invalid YAML or JSON: {exc}") from None
    if node is None:
        return None
    problems: list[tuple[int, Loc, str]] = []
    data = PlainBuilder(
        lambda line, loc, message: problems.append((line, loc, message)), duplicate_keys="last"
    ).build(node, ())
    if problems:
        line, loc, message = min(problems, key=lambda problem: problem[0])
        more = f" (and {len(problems) - 1} more like it)" if len(problems) > 1 else ""
        raise PrefectImportError(source, reduce(path, loc, ""), message + more, line)
    return data


_TOO_DEEP = f"lists and mappings nest more than {MAX_DEPTH} levels"


def _too_deep(data: Any) -> bool:
    """Whether JSON ``data`` nests past MAX_DEPTH (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    return False


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
