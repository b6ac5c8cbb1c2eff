"""Templates cannot make the renderer do unbounded work in C, where the timeout cannot reach.

Each case is small but over its bound, so a bound that fails shows as a slow or
failing test rather than a hung suite; each must fail fast with the bound named.
"""

from __future__ import annotations

import time

import pytest

from notifiers import TemplateError, render
from notifiers.templates import MAX_OUTPUT

pytestmark = pytest.mark.timeout(20)

# Each refused within this many seconds (the render timeout is 1 s: a refusal by the
# bound, not by the timeout, is what keeps C-level work from pinning a worker).
FAST = 0.5

OVER_BOUND = [
    # '**' whose result is a huge integer: each exponent is small, the result is not.
    ("{{ (2 ** 999) ** 999 }}", "bits"),
    ("{{ ((10 ** 999) ** 999) ** 2 }}", "bits"),
    ("{{ ((2 ** 900) ** 10) * ((2 ** 900) ** 10) }}", "bits"),
    # Padding and format widths.
    ("{{ 'x' | center(10 ** 7) }}", "width"),
    ("{{ 'x'.center(10 ** 7) }}", "width"),
    ("{{ 'x'.ljust(10 ** 7) }}", "width"),
    ("{{ 'x'.rjust(10 ** 7) }}", "width"),
    ("{{ 'x'.zfill(10 ** 7) }}", "width"),
    ("{{ 'x' | indent(10 ** 7, true) }}", "width"),
    ("{{ '%10000000d' | format(1) }}", "width"),
    ("{{ '%10000000d' % 1 }}", "width"),
    ("{{ '%.10000000f' % 1.5 }}", "width"),
    ("{{ '%*d' % (10000000, 1) }}", "'*'"),
    ("{{ '{:>10000000}'.format(1) }}", "width"),
    ("{{ '{:.10000000f}'.format(1.5) }}", "width"),
    ("{{ '{:{}}'.format(1, 10000000) }}", "nested"),
    ("{{ {'a': 1} | tojson(indent=10 ** 7) }}", "width"),
    # Repetition, concatenation, join and replace that build a huge string or list.
    ("{{ 'x' * 10 ** 7 }}", "items"),
    ("{{ (['x' * 100000] * 100) | join }}", "items"),
    ("{{ ('x' * 100000) ~ ('x' * 100000) }}", "items"),
    ("{{ ('x' * 100000) + ('x' * 100000) }}", "items"),
    ("{{ ('x' * 1000) | replace('x', 'y' * 1000) }}", "items"),
    ("{{ ('x' * 1000).replace('x', 'y' * 1000) }}", "items"),
    ("{{ ('x' * 1000).translate({120: 'y' * 1000}) }}", "items"),
    ("{{ ('\t' * 1000).expandtabs(1000) }}", "items"),
    ("{{ ','.join(['x' * 100000] * 100) }}", "items"),
    ("{{ ([[0] * 100000] * 100) | sum(start=[]) }}", "items"),
    # Doubling in a loop: each step is one C call.
    (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "items",
    ),
    (
        "{% set ns = namespace(s=['x']) %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
        "items",
    ),
    # The rendered text itself.
    ("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}", "output"),
]


@pytest.mark.parametrize(("source", "named"), OVER_BOUND)
def test_a_template_over_a_bound_fails_fast_naming_it(source: str, named: str) -> None:
    """Work over a bound is refused before it is done, with a TemplateError naming the bound."""
    started = time.monotonic()
    with pytest.raises(TemplateError) as failed:
        render(source, {}, timeout=5.0)
    assert time.monotonic() - started < FAST
    assert named in str(failed.value)
    assert "timed out" not in str(failed.value)


WITHIN_BOUNDS = [
    ("{{ 2 ** 10 }}", "1024"),
    ("{{ (2 ** 100) * 3 }}", str(2**100 * 3)),
    ("{{ 'ab' | center(6) }}", "  ab  "),
    ("{{ 'x'.ljust(3, '.') }}", "x.."),
    ("{{ '%5.1f' % 3.14159 }}", "  3.1"),
    ("{{ '%s-%s' | format('a', 'b') }}", "a-b"),
    ("{{ '%(n)03d' % {'n': 7} }}", "007"),
    ("{{ '{:>4}|{:.2f}'.format('a', 1.234) }}", "   a|1.23"),
    ("{{ 'a' ~ 'b' ~ 1 }}", "ab1"),
    ("{{ [1] + [2] }}", "[1, 2]"),
    ("{{ 1 + 2 }}", "3"),
    ("{{ 'abc'.replace('b', 'xx') }}", "axxc"),
    ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
    ("{{ [[1], [2]] | sum(start=[]) }}", "[1, 2]"),
    ("{{ [1, 2] | sum }}", "3"),
    ("{{ 'x' * 3 }}", "xxx"),
    ("{{ '5%' }}", "5%"),
]


@pytest.mark.parametrize(("source", "text"), WITHIN_BOUNDS)
def test_ordinary_templates_are_unaffected(source: str, text: str) -> None:
    """The bounds leave everyday formatting, arithmetic and joins alone."""
    assert render(source, {}) == text


def test_output_up_to_the_cap_renders() -> None:
    """A rendering of exactly MAX_OUTPUT characters is fine; one more is refused."""
    assert len(render("{{ 'x' * n }}", {"n": MAX_OUTPUT})) == MAX_OUTPUT
    with pytest.raises(TemplateError, match="output"):
        render("{{ 'x' * n }}{{ 'y' }}", {"n": MAX_OUTPUT})
