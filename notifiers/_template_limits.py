"""The sandbox's bounds on work a template can make the renderer do in one C call.

The render timeout interrupts Python bytecode only: ``(10 ** 999) ** 999``,
``'x'.center(10 ** 9)`` or a string doubled in a loop run inside one C call
that no asynchronous exception reaches, pinning a worker or allocating
gigabytes. So every operation that can build something large checks the size
of what it would build *before* building it, and refuses with a
``SecurityError`` that names the bound (the renderer makes it a ``TemplateError``):

* numbers: ``**`` and ``*`` on integers build at most ``MAX_INT_BITS`` bits;
  ``**`` exponents are at most ``MAX_EXPONENT``;
* strings and lists: ``*``, ``+``, ``~``, ``join``, ``replace``, ``translate``,
  ``expandtabs``, ``indent`` and ``sum`` build at most ``MAX_SEQUENCE`` items;
* widths: ``center``/``ljust``/``rjust``/``zfill``, ``indent``, ``tojson(indent=)``,
  ``%`` and ``format`` (filter and ``str.format``) widths and precisions are at
  most ``MAX_SEQUENCE``; ``'*'`` widths and nested ``{}`` format specs are refused;
* ``range`` yields at most ``MAX_RANGE`` items (Jinja's own sandbox allows 100,000);
* the rendered text of one template is at most ``MAX_OUTPUT`` characters
  (checked as it streams, in ``notifiers.templates``).

No I/O; no state beyond the environment's configuration.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import do_format, do_indent, make_attrgetter
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_environment

__all__ = [
    "MAX_EXPONENT",
    "MAX_INT_BITS",
    "MAX_OUTPUT",
    "MAX_RANGE",
    "MAX_SEQUENCE",
    "LimitedEnvironment",
    "bounded_filters",
    "capped_range",
    "check_width",
]

MAX_RANGE = 1_000
MAX_SEQUENCE = 100_000
MAX_EXPONENT = 1_000
# 16,384 bits is ~4,900 decimal digits, past the 4,300 Python will print anyway.
MAX_INT_BITS = 16_384
MAX_OUTPUT = 64 * 1024  # characters of one rendered template (one message field)


def capped_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() of {len(rng)} items exceeds the limit of {MAX_RANGE}")
    return rng


def check_width(what: str, width: Any) -> None:
    """Refuse a padding/format width or precision over ``MAX_SEQUENCE``."""
    if isinstance(width, int) and width > MAX_SEQUENCE:
        raise SecurityError(f"{what} width {width} exceeds the limit of {MAX_SEQUENCE}")


def _check_items(what: str, count: int) -> None:
    if count > MAX_SEQUENCE:
        raise SecurityError(f"{what} would build more than {MAX_SEQUENCE} items")


def _check_bits(what: str, bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise SecurityError(f"{what} would build a number over {MAX_INT_BITS} bits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# One printf-style conversion: %[(key)][flags][width][.precision][length]type.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
# The width and precision of a str.format spec: [[fill]align][sign][z][#][0][width][,_][.prec].
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?", re.DOTALL)


def check_percent_format(fmt: str) -> None:
    """Refuse ``%`` formatting whose widths or precisions exceed the bound."""
    for match in _PERCENT_SPEC.finditer(fmt):
        width, precision, _ = match.groups()
        if "*" in (width, precision):
            raise SecurityError("'%' format with a '*' width or precision is not allowed")
        for number in (width, precision):
            if number:
                check_width("'%' format", int(number))


def _check_str_format(fmt: str) -> None:
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise SecurityError("str.format with a nested '{}' format spec is not allowed")
        match = _FORMAT_SPEC.match(spec)
        if match is not None:
            for number in match.groups():
                if number:
                    check_width("str.format", int(number))


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Bounds on the ``str`` methods that can build far more than their inputs."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    first: Any = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        check_width(f"str.{name}", first if args else kwargs.get("width"))
    elif name == "expandtabs":
        size: Any = first if args else kwargs.get("tabsize", 8)
        if _is_int(size):
            _check_items("str.expandtabs", len(owner) + owner.count("\t") * size)
    elif name == "join" and args:
        parts = list(first)
        size = sum(len(p) for p in parts if isinstance(p, str))
        _check_items("str.join", size + len(owner) * max(len(parts) - 1, 0))
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((len(v) for v in first.values() if isinstance(v, str)), default=1)
        _check_items("str.translate", len(owner) * longest)


def _check_replace(text: Any, old: Any, new: Any) -> None:
    text, old, new = str(text), str(old), str(new)
    # An empty ``old`` matches between every character.
    matches = text.count(old) if old else len(text) + 1
    _check_items("replace", len(text) + matches * max(len(new) - len(old), 0))


def _check_concat(what: str, left: Any, right: Any) -> None:
    if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _check_items(what, len(left) + len(right))


class _CodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a join that checks its size first (the stock one does not)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the bounds of the module docstring."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _is_int(n):
                    _check_items("'*'", len(seq) * n)
            if _is_int(left) and _is_int(right):
                _check_bits("'*'", left.bit_length() + right.bit_length())
        elif operator == "**" and isinstance(right, int | float):
            if abs(right) > MAX_EXPONENT:
                raise SecurityError(f"'**' exponent above {MAX_EXPONENT}")
            if _is_int(left) and _is_int(right) and right > 0:
                _check_bits("'**'", left.bit_length() * right)
        elif operator == "+":
            _check_concat("'+'", left, right)
        elif operator == "%" and isinstance(left, str):
            check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    # Jinja's signature: dunder-prefixed positional names cannot clash with ``kwargs``.
    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_str_format(value.__self__)
        return wrapped

    def concat_parts(self, parts: Iterable[Any]) -> str:
        """``a ~ b ~ ...``: the strings joined, refused past ``MAX_SEQUENCE`` characters."""
        texts = [str(part) for part in parts]
        _check_items("'~'", sum(map(len, texts)))
        return "".join(texts)


def _center(value: Any, width: int = 80) -> str:
    check_width("center", width)
    return str(value).center(width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    indent = len(width) if isinstance(width, str) else width
    check_width("indent", indent)
    text = str(s)
    _check_items("indent", len(text) + (text.count("\n") + 1) * indent)
    return do_indent(text, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    check_percent_format(str(value))
    return do_format(value, *args, **kwargs)


@pass_environment
def _join(
    environment: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    parts = [str(item) for item in value]
    _check_items("join", sum(map(len, parts)) + len(str(d)) * max(len(parts) - 1, 0))
    return str(d).join(parts)


def _replace(s: Any, old: Any, new: Any, count: int | None = None) -> str:
    if count is None or count < 0:
        _check_replace(s, old, new)
    else:
        _check_items("replace", len(str(s)) + count * len(str(new)))
    return str(s).replace(str(old), str(new), -1 if count is None else count)


@pass_environment
def _sum(
    environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        _check_concat("sum", total, item)
        total = total + item
    return total


def bounded_filters() -> dict[str, Callable[..., Any]]:
    """Replacements for Jinja's filters that can build more than their inputs."""
    return {
        "center": _center,
        "indent": _indent,
        "format": _format,
        "join": _join,
        "replace": _replace,
        "sum": _sum,
    }
