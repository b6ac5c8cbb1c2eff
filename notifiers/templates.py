"""Sandboxed Jinja for message templates, with hard limits on what a template may cost.

Templates are written by people in YAML and rendered with event data, so they
are untrusted code:

* **Sandbox**: ``ImmutableSandboxedEnvironment``: no dunder or private
  attributes, no mutating lists/dicts of the context. A violation is a
  ``TemplateError``, never a silently empty string.
* **Missing data renders empty, typos fail.** A missing key or attribute of
  something that exists (``event.resource['team']``, ``event.payload.x.y``)
  renders as ``""``, as Prefect does, because labels and payloads vary per
  event. An unknown top-level name (``{{ evnt.id }}``) is a typo and raises
  ``TemplateError``. Use ``{% if x is defined %}`` or ``|default`` to branch.
* **Limits**: work done inside one C call (big-integer powers, padding widths,
  string repetition, joins) is bounded before it starts (``_template_limits``:
  ``MAX_INT_BITS``, ``MAX_SEQUENCE``, ``MAX_RANGE``), the rendered text is at most
  ``MAX_OUTPUT`` characters, and a render that runs past its ``timeout`` is
  stopped (the render thread gets an asynchronous exception, which interrupts
  any pure-Python loop but never a C call: hence the bounds).
* Autoescape is off: messages are text/markdown; HTML channels escape at the channel.

Compiled templates are cached per source string.
"""

from __future__ import annotations

import ctypes
import functools
import heapq
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from jinja2 import ChainableUndefined, TemplateSyntaxError, UndefinedError, pass_context
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.runtime import Context
from jinja2.utils import missing

from notifiers._template_limits import (
    MAX_INT_BITS,
    MAX_OUTPUT,
    MAX_RANGE,
    MAX_SEQUENCE,
    LimitedEnvironment,
    bounded_filters,
    capped_range,
    check_width,
)
from notifiers.errors import TemplateError

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_INT_BITS",
    "MAX_OUTPUT",
    "MAX_RANGE",
    "MAX_SEQUENCE",
    "check_syntax",
    "humanize",
    "render",
    "render_field",
    "render_json",
    "ui_url",
]

DEFAULT_TIMEOUT = 1.0


class _RenderTimeout(BaseException):
    """Raised inside a render thread to stop it; BaseException so templates' callers
    and Jinja's own ``except Exception`` handlers cannot swallow it."""


class _Undefined(ChainableUndefined):
    """Missing key/attribute of a real object renders empty; unknown names and
    sandbox refusals raise (see module docstring)."""

    __slots__ = ()

    def _must_fail(self) -> bool:
        # A hint is set by the sandbox ("access to attribute ... is unsafe").
        return self._undefined_obj is missing or self._undefined_hint is not None

    def __str__(self) -> str:
        if self._must_fail():
            self._fail_with_undefined_error()
        return ""

    def __iter__(self) -> Any:
        if self._must_fail():
            self._fail_with_undefined_error()
        return iter(())

    def __bool__(self) -> bool:
        if self._undefined_hint is not None:
            self._fail_with_undefined_error()
        return False


def humanize(value: Any) -> str:
    """Render a duration (``timedelta`` or seconds) as e.g. ``"3m 20s"``.

    At most the two most significant units are shown (``"1d 2h"``); under a
    second renders in milliseconds. ``None``/undefined renders empty.
    """
    if value is None or isinstance(value, ChainableUndefined):
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds):
        return str(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return sign + " ".join(p for p in parts if not p.startswith("0"))


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, ChainableUndefined):
        return None
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    """JSON without HTML escaping (messages are not HTML); models dump as JSON."""
    if isinstance(value, ChainableUndefined):
        value = None
    check_width("tojson indent", indent)
    return json.dumps(value, default=_to_jsonable, indent=indent, ensure_ascii=False)


def ui_url(ui_base_url: Any, resource_id: Any) -> str:
    """Link to a resource in the UI: ``{ui_base_url}/resources/{id}``; empty without a base.

    The ``ui_url`` filter and the default messages' links both follow this rule.
    """
    if not ui_base_url or isinstance(ui_base_url, ChainableUndefined) or not resource_id:
        return ""
    return f"{str(ui_base_url).rstrip('/')}/resources/{quote(str(resource_id), safe='')}"


@pass_context
def _ui_url(context: Context, resource_id: Any) -> str:
    return ui_url(context.get("ui_base_url"), resource_id)


_env = LimitedEnvironment(autoescape=False, undefined=_Undefined, keep_trailing_newline=True)
_env.globals["range"] = capped_range
_env.filters.update(bounded_filters())
_env.filters["tojson"] = _tojson
_env.filters["humanize"] = humanize
_env.filters["ui_url"] = _ui_url


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> Any:
    return _env.from_string(source)


def _syntax_error(exc: TemplateSyntaxError) -> TemplateError:
    return TemplateError(f"syntax error: {exc.message}", line=exc.lineno)


def check_syntax(source: str) -> str | None:
    """Return a readable syntax error (``"line 3: syntax error: ..."``), or None if valid."""
    try:
        _compile(source)
    except TemplateSyntaxError as exc:
        return str(_syntax_error(exc))
    return None


class _Watchdog:
    """One long-lived thread that interrupts renders running past their deadline.

    A render runs on the caller's thread (no thread per render); it registers a
    deadline here first. Past it, the watchdog injects ``_RenderTimeout`` into
    that thread. Registration ends under the lock, and an exception injected but
    not yet raised is cleared then, so it can never surface after ``render``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: list[tuple[float, int]] = []  # heap of (deadline, token)
        self._active: dict[int, int] = {}  # token -> thread ident
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def enter(self, timeout: float) -> int:
        token = next(self._tokens)
        with self._cond:
            self._active[token] = threading.get_ident()
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, token))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="template-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return token

    def leave(self, token: int) -> bool:
        """End a render; True when it was interrupted (its timeout fired)."""
        with self._cond:
            ident = self._active.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
            if fired and ident is not None:
                # Clear an injected exception the thread has not raised yet.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        return fired

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._deadlines and self._deadlines[0][1] not in self._active:
                    heapq.heappop(self._deadlines)
                if not self._deadlines:
                    self._cond.wait()
                    continue
                deadline, token = self._deadlines[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._deadlines)
                self._fired.add(token)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._active[token]), ctypes.py_object(_RenderTimeout)
                )


_WATCHDOG = _Watchdog()


def render(source: str, context: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Render ``source`` with ``context`` in the sandbox, within ``timeout`` seconds.

    Raises ``TemplateError`` for a syntax error (with its line), an unknown
    name, a sandbox violation, a limit, a timeout, or any error the template
    raised. Blocking: call it from a worker thread when on an event loop.
    """
    try:
        template = _compile(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc) from exc

    token = _WATCHDOG.enter(timeout)
    output: str | None = None
    error: BaseException | None = None
    try:
        output = _stream(template, context)
    except BaseException as exc:  # includes the injected _RenderTimeout
        error = exc
    finally:
        # The watchdog may fire between the render's end and leave(): absorb it.
        timed_out = False
        while True:
            try:
                timed_out = _WATCHDOG.leave(token) or timed_out
                break
            except _RenderTimeout:
                timed_out = True
    if timed_out or isinstance(error, _RenderTimeout):
        raise TemplateError(f"render timed out after {timeout:g}s; simplify the loops")
    if error is not None:
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise error
        raise _render_error(error) from error
    assert output is not None
    return output


def _stream(template: Any, context: Mapping[str, Any]) -> str:
    """The template's text, refused as soon as it passes ``MAX_OUTPUT`` characters (a loop
    of small outputs would otherwise pile up gigabytes before the timeout fires)."""
    parts: list[str] = []
    size = 0
    for part in template.root_render_func(template.new_context(dict(context))):
        size += len(part)
        if size > MAX_OUTPUT:
            raise SecurityError(f"rendered output exceeds the limit of {MAX_OUTPUT} characters")
        parts.append(part)
    return "".join(parts)


# A string that is one ``{{ expression }}`` and nothing else (surrounding whitespace aside).
_ONE_EXPRESSION = re.compile(r"\s*\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|\{#).)+)\}\}\s*", re.DOTALL)


def render_json(
    value: Any,
    context: Mapping[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    where: str = "",
) -> Any:
    """Render every string of a JSON structure as a template, keeping JSON types.

    The one rule for JSON templates (webhook bodies, run parameters and job
    variables, emitted events, orchestrator requests): a string that is exactly
    one ``{{ expression }}`` (surrounding whitespace allowed) becomes the
    expression's JSON value (number, boolean, list, mapping, ``null``); any other
    string renders as text; numbers, booleans and ``None`` pass through; keys are
    kept. An unknown top-level name fails as it does in a text template (a typo is
    never a silent ``null``; a missing attribute of a known object is ``null``).

    Raises ``TemplateError`` whose reason starts with the field: ``where`` for
    ``value`` itself, then ``.key`` / ``[index]`` inside it (``body.retries:
    undefined: ...``). Blocking: run it off the event loop.
    """
    if isinstance(value, str):
        text = render_field(value, context, timeout=timeout, where=where)
        match = _ONE_EXPRESSION.fullmatch(value)
        if match is None:
            return text
        # Rendered as text first on purpose: that fails unknown names (typos)
        # exactly as text templates do, where `tojson` would quietly give null.
        as_json = "{{ (" + match["expr"] + ") | tojson }}"
        return json.loads(render_field(as_json, context, timeout=timeout, where=where))
    if isinstance(value, Mapping):
        prefix = f"{where}." if where else ""
        return {
            key: render_json(item, context, timeout=timeout, where=f"{prefix}{key}")
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            render_json(item, context, timeout=timeout, where=f"{where}[{index}]")
            for index, item in enumerate(value)
        ]
    return value


def render_field(
    source: str, context: Mapping[str, Any], *, where: str, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """``render`` for the text field ``where``: a ``TemplateError`` names it first."""
    try:
        return render(source, context, timeout=timeout)
    except TemplateError as exc:
        if not where:
            raise
        raise TemplateError(f"{where}: {exc}") from exc


def _render_error(exc: BaseException) -> TemplateError:
    line = getattr(exc, "lineno", None)
    if isinstance(exc, SecurityError):
        return TemplateError(f"sandbox violation: {exc}", line=line)
    if isinstance(exc, UndefinedError):
        return TemplateError(f"undefined: {exc}; use '| default' or 'is defined'", line=line)
    if isinstance(exc, TemplateSyntaxError):
        return _syntax_error(exc)
    if isinstance(exc, TemplateRuntimeError):
        return TemplateError(f"render failed: {exc}", line=line)
    if isinstance(exc, RecursionError):
        return TemplateError("render failed: recursion too deep", line=line)
    return TemplateError(f"render failed: {type(exc).__name__}: {exc}", line=line)
