"""Load automation YAML files into one :class:`~automations.spec.Config`.

Every mistake in every file is collected and raised together as one
:class:`~automations.errors.ConfigError`; each :class:`~automations.errors.Problem`
carries the file, the 1-based line and the key path. Line numbers come from
PyYAML's composed node tree: while turning nodes into plain data we record the
start line of every key and list item, and map pydantic's error ``loc`` back to
the longest recorded prefix.

``${VAR}`` and ``${VAR:-default}`` in any string value are resolved from ``env``
(``$${VAR}`` keeps the text literally). Resolved values and channel URLs are
secrets: they are redacted from every message and reported by
:meth:`Config.secrets`; a missing variable is reported by its *name*.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from automations.errors import ConfigError, Problem
from automations.spec import (
    ACTION_TYPES,
    TRIGGER_TYPES,
    Automation,
    Channel,
    Config,
    Orchestrator,
    Silence,
)
from automations.spec.loop_guard import check_loops
from automations.spec.yaml_safe import PlainBuilder, compose

Loc = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOP_LEVEL = ("channels", "automations", "silences", "orchestrators")
_M = TypeVar("_M", bound=BaseModel)
_CHANNELS_HINT = "must be a mapping of channel name to {url: ...}"
_ORCHESTRATORS_HINT = "must be a mapping of name to {prefect: {api_url: ...}} or {http: {...}}"
# Fields whose value is a discriminated union: pydantic puts the tag in ``loc`` after them.
_UNIONS: dict[str, dict[str, type[BaseModel]]] = {
    "trigger": TRIGGER_TYPES,
    "triggers": TRIGGER_TYPES,
    "actions": ACTION_TYPES,
    "actions_on_resolve": ACTION_TYPES,
}


def load_config(paths: Sequence[Path], env: Mapping[str, str]) -> Config:
    """Load and merge ``paths`` (in order), resolving ``${VAR}`` from ``env``.

    Raises :class:`ConfigError` listing every problem across all files. Channel and
    automation names must be unique across files; a ``notify`` action must name a
    channel defined in any of the files.
    """
    secrets: set[str] = set()
    problems: list[Problem] = []
    channels: dict[str, tuple[Channel, str, int]] = {}
    automations: list[tuple[Automation, _Document, int]] = []
    names: dict[str, tuple[str, int]] = {}
    silences: list[Silence] = []
    orchestrators: dict[str, Orchestrator] = {}
    # Channel references are checked on the raw data, so an automation with other
    # mistakes still has its unknown channel reported in the same run.
    raw_automations: list[tuple[_Document, int, dict[str, Any]]] = []

    for path in paths:
        document = _read(path, env, secrets, problems)
        if document is None:
            continue
        for name, channel in _validate_named(
            document, problems, "channels", Channel, _CHANNELS_HINT
        ).items():
            line = document.line(("channels", name))
            if name in channels:
                _, first_file, first_line = channels[name]
                problems.append(
                    document.problem(
                        ("channels", name),
                        f"channel '{name}' is already defined at {first_file}:{first_line}; "
                        "rename one of them",
                    )
                )
                continue
            channels[name] = (channel, document.file, line)
        for index, automation in _validate_automations(document, names, problems):
            automations.append((automation, document, index))
            problems.extend(check_loops(automation, document.problem, ("automations", index)))
        silences.extend(_validate_silences(document, problems))
        orchestrators.update(
            _validate_named(document, problems, "orchestrators", Orchestrator, _ORCHESTRATORS_HINT)
        )
        raw = document.data.get("automations")
        if isinstance(raw, list):
            raw_automations.extend(
                (document, index, body) for index, body in enumerate(raw) if isinstance(body, dict)
            )

    for document, index, body in raw_automations:
        problems.extend(_check_channels(body, document, index, channels))

    if problems:
        order = {str(path): position for position, path in enumerate(paths)}
        problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line or 0))
        raise ConfigError(_redact(problem, secrets) for problem in problems)
    config = Config(
        channels={name: channel for name, (channel, _, _) in channels.items()},
        automations=[automation for automation, _, _ in automations],
        silences=silences,
        orchestrators=orchestrators,
    )
    return config.with_secrets(frozenset(secrets))


# -- reading -----------------------------------------------------------------


@dataclass
class _Document:
    """One file as plain data plus the line of every key and list item."""

    file: str
    data: Any = None
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        for end in range(len(loc), -1, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return 1

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.file, self.line(loc), _render(loc), message)


def _read(
    path: Path, env: Mapping[str, str], secrets: set[str], problems: list[Problem]
) -> _Document | None:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(Problem(file, None, "", f"cannot read the file ({reason}); check the path"))
        return None
    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or exc.context or "invalid YAML"
        problems.append(Problem(file, line, "", f"invalid YAML: {what}; fix the syntax here"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 1, "", f"invalid YAML: {exc}; fix the syntax"))
        return None

    document = _Document(file, lines={(): 1})
    if node is None:
        document.data = {}
        return document
    builder = _Builder(document, env, secrets, problems)
    document.data = builder.build(node, ())
    if builder.refused:
        # Tags, loops, bombs: the data is not what was meant; its problems are reported.
        return None
    if not isinstance(document.data, dict):
        problems.append(
            document.problem(
                (), "the document must be a mapping with 'channels:' and 'automations:'"
            )
        )
        return None
    for key in document.data:
        if key not in _TOP_LEVEL:
            problems.append(document.problem((key,), _unknown_key(str(key), _TOP_LEVEL)))
    return document


class _Builder(PlainBuilder):
    """Plain data within :mod:`~automations.spec.yaml_safe`'s limits; lines and ``${VAR}``."""

    def __init__(
        self,
        document: _Document,
        env: Mapping[str, str],
        secrets: set[str],
        problems: list[Problem],
    ) -> None:
        super().__init__(self._report)
        self.document = document
        self.env = env
        self.secrets = secrets
        self.problems = problems

    def _report(self, line: int, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.document.file, line, _render(loc), message))

    def record(self, loc: Loc, line: int) -> None:
        self.document.lines[loc] = line

    def make_key(self, raw: Hashable) -> str | int:
        return raw if isinstance(raw, str | int) else str(raw)

    def text(self, value: str, loc: Loc, line: int) -> str:
        return self._substitute(value, loc, line)

    def _substitute(self, text: str, loc: Loc, line: int) -> str:
        def replace(found: re.Match[str]) -> str:
            escaped, name, default = found.group(1), found.group(2), found.group(3)
            if escaped:
                return found.group(0)[1:]
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                self.problems.append(
                    Problem(
                        self.document.file,
                        line,
                        _render(loc),
                        f"environment variable {name} is not set; export it, "
                        f"or write ${{{name}:-default}} to give a default",
                    )
                )
                # Keep the reference: an empty value would add a second, misleading
                # error for the same mistake (and the config is rejected anyway).
                return found.group(0)
            if value:
                self.secrets.add(value)
            return value

        return _ENV_REF.sub(replace, text) if "$" in text else text


# -- validation --------------------------------------------------------------


def _validate_named(
    document: _Document, problems: list[Problem], key: str, model: type[_M], hint: str
) -> dict[str, _M]:
    """A top-level mapping of name to ``model``; every entry's errors are reported."""
    raw = document.data.get(key, {})
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(document.problem((key,), hint))
        return {}
    out: dict[str, _M] = {}
    for name, body in raw.items():
        try:
            out[str(name)] = model.model_validate(body)
        except ValidationError as exc:
            problems.extend(_from_pydantic(document, (key, name), model, exc))
    return out


def _validate_silences(document: _Document, problems: list[Problem]) -> list[Silence]:
    raw = document.data.get("silences", [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(
            document.problem(("silences",), "must be a list; start each silence with '- name:'")
        )
        return []
    out: list[Silence] = []
    for index, body in enumerate(raw):
        try:
            out.append(Silence.model_validate(body))
        except ValidationError as exc:
            problems.extend(_from_pydantic(document, ("silences", index), Silence, exc))
    return out


def _validate_automations(
    document: _Document, names: dict[str, tuple[str, int]], problems: list[Problem]
) -> list[tuple[int, Automation]]:
    raw = document.data.get("automations", [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(
            document.problem(
                ("automations",), "must be a list; start each automation with '- name:'"
            )
        )
        return []
    out: list[tuple[int, Automation]] = []
    for index, body in enumerate(raw):
        # Names are checked on the raw data so a duplicate is reported even when
        # one of the two automations has other mistakes.
        name = body.get("name") if isinstance(body, dict) else None
        duplicate = False
        if isinstance(name, str):
            loc: Loc = ("automations", index, "name")
            if name in names:
                first_file, first_line = names[name]
                problems.append(
                    document.problem(
                        loc,
                        f"automation name '{name}' is already used at "
                        f"{first_file}:{first_line}; give each automation a unique name",
                    )
                )
                duplicate = True
            else:
                names[name] = (document.file, document.line(loc))
        try:
            automation = Automation.model_validate(body)
        except ValidationError as exc:
            problems.extend(_from_pydantic(document, ("automations", index), Automation, exc))
            continue
        if not duplicate:
            out.append((index, automation))
    return out


def _check_channels(
    body: Mapping[str, Any],
    document: _Document,
    index: int,
    channels: Mapping[str, tuple[Channel, str, int]],
) -> list[Problem]:
    problems = []
    for field_name in ("actions", "actions_on_resolve"):
        actions = body.get(field_name)
        if not isinstance(actions, list):
            continue
        for position, action in enumerate(actions):
            if not isinstance(action, dict) or action.get("type") != "notify":
                continue
            for key in ("channel", "fallback"):
                channel = action.get(key)
                if not isinstance(channel, str) or channel in channels:
                    continue
                known = sorted(channels)
                hint = _did_you_mean(channel, known)
                choices = ", ".join(known) if known else "none defined yet"
                problems.append(
                    document.problem(
                        ("automations", index, field_name, position, key),
                        f"unknown channel '{channel}';{hint} define it under "
                        f"'channels:' or use one of: {choices}",
                    )
                )
    return problems


def _from_pydantic(
    document: _Document, prefix: Loc, model: type[BaseModel], exc: ValidationError
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc, owner = _strip_tags((*prefix, *error["loc"]), len(prefix), model)
        problems.append(document.problem(loc, _message(error, loc, owner)))
    return problems


def _strip_tags(loc: Loc, start: int, model: type[BaseModel]) -> tuple[Loc, type[BaseModel] | None]:
    """Drop pydantic's union tags and ``[key]`` markers; return the model owning the last key."""
    out: list[str | int] = list(loc[:start])
    current: type[BaseModel] | None = model
    union: dict[str, type[BaseModel]] | None = None
    owner: type[BaseModel] | None = model
    for part in loc[start:]:
        if part == "[key]":
            continue
        if union is not None and isinstance(part, str) and part in union:
            current, union = union[part], None
            continue
        out.append(part)
        owner = current
        if isinstance(part, int):
            continue
        if current is not None and part in current.model_fields:
            union = _UNIONS.get(part)
            current = _nested_model(current.model_fields[part].annotation)
        else:
            current = None
    return tuple(out), owner


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    while get_origin(annotation) is not None:
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if not args:
            return None
        annotation = args[-1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _message(error: ErrorDetails, loc: Loc, owner: type[BaseModel] | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    last = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        allowed = tuple(owner.model_fields) if owner is not None else ()
        return _unknown_key(str(last), allowed)
    if kind == "missing":
        return f"required key '{last}' is missing; add '{last}: ...'"
    if kind == "union_tag_not_found":
        field_name = next((p for p in reversed(loc) if isinstance(p, str)), "")
        choices = ", ".join(_UNIONS.get(field_name, {}))
        return f"'type' is missing; add 'type:' with one of: {choices}"
    if kind == "union_tag_invalid":
        return (
            f"unknown type {ctx.get('tag', '')!r}; write 'type:' as one of: "
            f"{str(ctx.get('expected_tags', '')).replace(chr(39), '')}"
        )
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}; write one of those exactly"
    if kind == "too_short" and last == "actions":
        return "needs at least one action; add e.g. '- type: notify'"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number; write e.g. 3"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind == "string_type":
        return 'must be a text string; quote it, e.g. "text"'
    if kind == "list_type":
        return "must be a list; write e.g. [a, b] or one '- item' per line"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping of 'key: value' lines"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}; write {ctx.get('ge')} or more"
    if kind == "too_short":
        return "must not be empty"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    hint = _did_you_mean(key, allowed)
    return f"unknown key '{key}';{hint} allowed keys: {', '.join(allowed)}"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" did you mean '{close[0]}'?" if close else ""


def _render(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


def _redact(problem: Problem, secrets: set[str]) -> Problem:
    message, path = problem.message, problem.path
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
        path = path.replace(secret, "***")
    return Problem(problem.file, problem.line, path, message)
