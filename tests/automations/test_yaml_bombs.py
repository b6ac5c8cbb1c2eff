"""Hostile YAML: alias bombs, alias loops, python tags, unknown tags, deep nesting.

Each is a problem at ``file:line`` (the loader) or a :class:`PrefectImportError`
with its line (the Prefect import), never a traceback and never gigabytes of memory.
Anchors, aliases and merge keys used as intended keep working.

The bombs run in process expand to a few hundred thousand values: past the limit,
yet small enough that the code before the limit finishes them in seconds. The
billion-value bomb runs in a subprocess with its memory capped and a timeout.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from automations.errors import ConfigError, Problem
from automations.prefect_import import PrefectImportError, convert
from automations.spec.loader import load_config

# 10**9 strings once expanded, in a few hundred bytes: the bomb.
BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)
# 6**7 = 279,936 strings: over the limit, quick enough for code without one.
SMALL_BOMB = (
    "channels:\n"
    "  c: {url: 'json://x'}\n"
    "x-a0: &a0 [v, v, v, v, v, v]\n"
    "x-a1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0]\n"
    "x-a2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1]\n"
    "x-a3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2]\n"
    "x-a4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3]\n"
    "x-a5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4]\n"
    "x-a6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5]\n"
)


def _problems(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "automations.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config([path], {})
    return caught.value.problems


def _yaml_problems(problems: list[Problem]) -> list[tuple[int | None, str]]:
    """The problems that are not about unknown top-level keys (the bombs sit under x-*)."""
    return [(p.line, p.message) for p in problems if not p.message.startswith("unknown key")]


# -- the loader --------------------------------------------------------------


def test_alias_bomb_is_one_problem_at_its_line(tmp_path: Path) -> None:
    """Aliases that expand past 100,000 values are refused where they are written."""
    problems = _yaml_problems(_problems(tmp_path, SMALL_BOMB))
    assert len(problems) == 1
    ((line, message),) = problems
    assert line in range(4, 10)
    assert "100,000 values" in message
    assert "anchors are for small shared blocks" in message


def test_self_referential_alias_is_a_problem(tmp_path: Path) -> None:
    """An alias inside the block it names is a loop: a problem, not RecursionError."""
    problems = _problems(tmp_path, "channels:\n  c:\n    url: json://x\n    headers: &h [*h]\n")
    assert [(p.line, p.path) for p in problems] == [(4, "channels.c.headers[0]")]
    assert "inside the block it names" in problems[0].message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('!!python/object/apply:os.system ["touch {marker}"]', "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!foo bar", "!foo"),
        ("!foo {a: b}", "!foo"),
        ("!!set {a, b}", "!!set"),
    ],
)
def test_tags_other_than_the_standard_ones_are_refused(
    tmp_path: Path, value: str, shown: str
) -> None:
    """python/*, unknown and exotic tags are a problem naming the tag; nothing runs."""
    marker = tmp_path / "ran"
    text = f"channels:\n  c:\n    url: {value.replace('{marker}', str(marker))}\n"
    (problem,) = _problems(tmp_path, text)
    assert (problem.line, problem.path) == (3, "channels.c.url")
    assert f"tag '{shown}'" in problem.message
    assert "remove the tag" in problem.message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("!!int many", "!!int"),
        ("!!float x", "!!float"),
        ("!!bool maybe", "!!bool"),
        ("2026-13-45", "not a valid date"),
    ],
)
def test_values_that_do_not_fit_their_tag_are_problems(
    tmp_path: Path, value: str, fragment: str
) -> None:
    """A standard tag on a value it cannot read (or a date that does not exist) is a problem."""
    (problem,) = _problems(tmp_path, f"channels:\n  c:\n    url: {value}\n")
    assert (problem.line, problem.path) == (3, "channels.c.url")
    assert fragment in problem.message


def test_every_yaml_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Tags, loops and bad values anywhere in a file come back together, by line."""
    text = (
        "channels:\n"
        "  a: {url: !!python/object:os.system x}\n"
        "  b: {url: json://b, headers: &l [*l]}\n"
        "  c: {url: !secret x}\n"
        "  d: {url: json://d, timeout: !!int soon}\n"
    )
    problems = _problems(tmp_path, text)
    assert [(p.line, p.path) for p in problems] == [
        (2, "channels.a.url"),
        (3, "channels.b.headers[0]"),
        (4, "channels.c.url"),
        (5, "channels.d.timeout"),
    ]


def test_nesting_past_the_limit_is_a_problem(tmp_path: Path) -> None:
    """Thousands of nested brackets are a problem at line 1, not RecursionError."""
    problems = _problems(tmp_path, "channels: " + "[" * 5000 + "]" * 5000 + "\n")
    assert [p.line for p in problems] == [1]
    assert "nest more than 100 levels" in problems[0].message


def test_aliases_cannot_nest_past_the_limit(tmp_path: Path) -> None:
    """Anchors that each add depth are refused once the expansion nests too deep."""
    lines = ["channels: {}", "x-0: &d0 [[[[[[[[[[v]]]]]]]]]]"]
    lines += [f"x-{n}: &d{n} [[[[[[[[[[*d{n - 1}]]]]]]]]]]" for n in range(1, 15)]
    problems = _yaml_problems(_problems(tmp_path, "\n".join(lines) + "\n"))
    # x-N's values sit 10 * (N + 1) + 1 levels deep: x-9 to x-14 (lines 11-16) are refused.
    assert [line for line, _ in problems] == list(range(11, 17))
    assert all("nest more than 100 levels" in message for _, message in problems)


def test_merge_key_merges_and_own_keys_win(tmp_path: Path) -> None:
    """`<<: *base` copies a shared block; keys written beside it override it."""
    path = tmp_path / "automations.yaml"
    path.write_text(
        "channels:\n"
        "  base: &base {url: 'json://a', timeout: 30, rate_limit: 5/m}\n"
        "  other:\n"
        "    <<: *base\n"
        "    url: 'json://b'\n"
        "  third:\n"
        "    <<: [{timeout: 7}, *base]\n",
        encoding="utf-8",
    )
    channels = load_config([path], {}).channels
    assert channels["other"].url == "json://b"
    assert channels["other"].timeout.total_seconds() == 30
    assert channels["other"].rate_limit == channels["base"].rate_limit
    assert channels["third"].url == "json://a"
    assert channels["third"].timeout.total_seconds() == 7


def test_merge_key_of_a_list_is_a_problem(tmp_path: Path) -> None:
    """`<<:` with something other than a mapping says what it takes."""
    (problem,) = _problems(tmp_path, "channels:\n  c:\n    <<: [a, b]\n    url: json://c\n")
    assert (problem.line, problem.path) == (3, "channels.c")
    assert "'<<:' merges a mapping" in problem.message


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    """A shared block anchored once and aliased in several automations loads as copies."""
    path = tmp_path / "automations.yaml"
    body = "\n".join(
        f"  - name: a{n}\n    trigger: {{type: event, expect: [x]}}\n    actions: *page"
        for n in range(1, 4)
    )
    path.write_text(
        "channels:\n"
        "  ops: &ops {url: 'json://ops'}\n"
        "  ops-copy: *ops\n"
        "automations:\n"
        "  - name: a0\n"
        "    trigger: {type: event, expect: [x]}\n"
        "    actions: &page [{type: notify, channel: ops}]\n" + body + "\n",
        encoding="utf-8",
    )
    config = load_config([path], {})
    assert config.channels["ops-copy"].url == "json://ops"
    assert [a.name for a in config.automations] == ["a0", "a1", "a2", "a3"]
    assert all(len(a.actions) == 1 for a in config.automations)


_RUN_BOMB = """
import sys, time
from pathlib import Path
from automations.errors import ConfigError
from automations.spec.loader import load_config
started = time.process_time()
try:
    load_config([Path(sys.argv[1])], {})
except ConfigError as exc:
    print(exc)
print(f"cpu {time.process_time() - started:.3f}")
"""


def _capped() -> None:
    limit = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_billion_laughs_is_refused_within_a_second(tmp_path: Path) -> None:
    """The issue's 10**9 bomb: one problem at its line, under 1 GB, in under a second of CPU."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", _RUN_BOMB, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_capped,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "100,000 values" in done.stdout
    assert f"{path}:" in done.stdout
    cpu = float(done.stdout.rsplit("cpu ", 1)[1])
    assert cpu < 1.0


# -- the Prefect import ------------------------------------------------------


def _import_error(text: str) -> PrefectImportError:
    with pytest.raises(PrefectImportError) as caught:
        convert(text, source="in.yaml")
    return caught.value


def test_import_refuses_an_alias_bomb() -> None:
    """An alias bomb in Prefect input is an error at its line, not output full of aliases."""
    bomb = SMALL_BOMB.replace("channels:\n  c: {url: 'json://x'}\n", "")
    text = bomb + "automations:\n  - {name: a, description: *a6, trigger: {expect: [x]}}\n"
    error = _import_error(text)
    assert error.line in range(1, 10)
    assert "100,000 values" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("automations: &a [*a]\n", 1, "inside the block it names"),
        ("automations:\n  - name: !!python/object/apply:os.system [ls]\n", 2, "tag '!!python"),
        ("automations:\n  - {name: a, description: !foo x}\n", 2, "tag '!foo'"),
        ("automations: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nest more than 100 levels"),
    ],
)
def test_import_refuses_hostile_yaml_at_its_line(text: str, line: int, fragment: str) -> None:
    """Loops, python and unknown tags, deep nesting: a PrefectImportError with the line."""
    error = _import_error(text)
    assert error.line == line
    assert fragment in str(error)
    assert str(error).startswith(f"in.yaml:{line}: ")


def test_import_refuses_json_nested_past_the_limit() -> None:
    """Deeply nested JSON is an error, not RecursionError."""
    error = _import_error('{"automations": ' + "[" * 5000 + "]" * 5000 + "}")
    assert "nest more than 100 levels" in str(error)


def test_import_keeps_merge_keys_and_aliases() -> None:
    """Anchors and merge keys in Prefect YAML import as the values they stand for."""
    text = (
        "automations:\n"
        "  - &first {name: a, trigger: {expect: [x.y]}, actions: [{type: do-nothing}]}\n"
        "  - <<: *first\n"
        "    name: b\n"
    )
    result = convert(text)
    assert "name: b" in result.yaml
    assert result.yaml.count("expect:") == 2
    assert "&id" not in result.yaml
