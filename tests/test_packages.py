"""The three packages are ours, their public surfaces are honest, and arrows point down.

The import rules read every file with :mod:`ast`: imports inside functions count
like module-level ones (a lazy import that hides a cycle is still a cycle), and
only imports under ``if TYPE_CHECKING:`` are left out of the cycle check.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("events", "notifiers", "automations")
# Everything that may import our packages: the packages, their tests, the bench, examples.
SCANNED = (*PACKAGES, "tests", "bench", "examples")

MAX_TOP_LEVEL_MODULES = 8  # in automations/: the rest lives in role folders
MAX_MODULE_LINES = 500

# automations/ role folders (and top-level modules), bottom up. engine and delivery are
# siblings: neither imports the other; both stand on state. A module may import its own
# layer and those below.
TOP = 5
RANKS = {
    "automations.spec": 0,
    "automations.errors": 0,
    "automations.core": 1,
    "automations.state": 2,
    "automations.prefect_import": 2,  # spec and core only
    "automations.engine": 3,
    "automations.delivery": 3,
    "automations.service": 4,
    # The public surface (automations/__init__.py) and the test fakes use everything.
    "automations": TOP,
    "automations.testing": TOP,
}


@pytest.mark.parametrize("name", PACKAGES)
def test_package_imports_from_this_repo(name: str) -> None:
    """PyPI has unrelated `events` and `notifiers`: ours must be the ones imported."""
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    """Every name in __all__ is importable from the package."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", [])
    assert exported, f"{name} has no __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names {attr} which does not exist"


# -- reading imports ---------------------------------------------------------


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    path: Path  # its file, relative to ROOT
    line: int
    target: str  # the imported module, dotted (a package means its __init__)
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _files() -> dict[str, Path]:
    """Dotted module name → file, for every Python file we scan."""
    found: dict[str, Path] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node``, with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, type_only
                yield from _walk(stmt, type_only)
            continue
        yield child, type_only
        yield from _walk(child, type_only)


@cache
def _imports_of(module: str) -> tuple[Import, ...]:
    path = _files()[module]
    return _read_imports(module, path.relative_to(ROOT), path.read_text(), set(_files()))


def _read_imports(module: str, path: Path, text: str, known: set[str]) -> tuple[Import, ...]:
    """The imports in ``text``, the source of ``module`` (``known``: every module name)."""
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node, type_only in _walk(ast.parse(text, str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                # ``from pkg import module`` imports the module; ``from mod import name``
                # imports mod.
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        line = getattr(node, "lineno", 0)
        for target in dict.fromkeys(targets):
            found.append(Import(module, path, line, target, type_only))
    return tuple(found)


def _all_imports(*tops: str) -> Iterator[Import]:
    for module in _files():
        if module.split(".")[0] in tops:
            yield from _imports_of(module)


def _ours(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


def test_the_import_reader_sees_lazy_relative_and_type_only_imports() -> None:
    """The rules below see imports inside functions, resolve relative ones, and mark
    ``if TYPE_CHECKING:`` ones."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "from . import _b\n"
        "from .c import name\n"
        "if TYPE_CHECKING:\n"
        "    from events._memory_bus import MemoryBus\n"
        "def f():\n"
        "    import events._kafka_bus\n"
    )
    known = {"pkg.a", "pkg._b", "pkg.c"}
    found = _read_imports("pkg.a", Path("pkg/a.py"), text, known)
    assert [(imp.target, imp.type_only) for imp in found] == [
        ("typing", False),
        ("pkg._b", False),
        ("pkg.c", False),
        ("events._memory_bus", True),
        ("events._kafka_bus", False),
    ]


def test_the_cycle_finder_names_each_cycle() -> None:
    """A cycle is reported as its modules in order; a diamond is not a cycle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e", "f"}, "e": {"g"}, "f": {"g"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


# -- rules -------------------------------------------------------------------


def test_arrows_point_down_the_layout() -> None:
    """events/ and notifiers/ depend on nothing of ours; automations/ may use both."""
    wrong = [
        str(imp)
        for imp in _all_imports("events", "notifiers")
        if _ours(imp.target) and imp.target.split(".")[0] != imp.source.split(".")[0]
    ]
    assert not wrong, "events/ and notifiers/ must not import each other or automations/:\n" + (
        "\n".join(wrong)
    )


def _unit(module: str) -> str:
    """Who owns ``module``'s private parts: its top package, or its automations/ role folder."""
    parts = module.split(".")
    if parts[0] == "automations" and len(parts) > 1 and (ROOT / "automations" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def _private_owner(target: str) -> str | None:
    """The package a private module (a segment starting with ``_``) belongs to, else None."""
    parts = target.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and part not in {"__init__", "__future__", "__main__"}:
            return ".".join(parts[:index])
    return None


def _may_import_private(source: str, owner: str) -> bool:
    if source.split(".")[0] == "tests":
        # tests/<package>/... may open their own package's private modules.
        parts = source.split(".")
        tested = parts[1] if len(parts) > 2 else ""
        return owner.split(".")[0] == tested
    return _unit(source) == _unit(owner)


def test_no_private_module_of_another_package_is_imported() -> None:
    """No file imports another package's (or automations/ role folder's) `_private` module."""
    wrong = [
        str(imp)
        for imp in _all_imports(*SCANNED)
        if _ours(imp.target)
        and (owner := _private_owner(imp.target)) is not None
        and not _may_import_private(imp.source, owner)
    ]
    assert not wrong, (
        "import the package's public name instead (add it to __all__ of its package):\n"
        + "\n".join(wrong)
    )


def _rank(module: str) -> int:
    """The layer of an automations/ module: its role folder's, or its own if top-level."""
    if module == "automations":
        return TOP
    parts = module.split(".")
    for size in range(len(parts), 1, -1):
        rank = RANKS.get(".".join(parts[:size]))
        if rank is not None:
            return rank
    raise AssertionError(f"{module} has no layer in tests/test_packages.py RANKS: give it one")


def test_automations_layers_only_import_down() -> None:
    """In automations/, a module imports only from its own layer or below (spec is lowest).

    Imports under ``if TYPE_CHECKING:`` count too: a type from above is an arrow up."""
    wrong = [
        f"{imp} (layer {_rank(imp.target)} above {_rank(imp.source)})"
        for imp in _all_imports("automations")
        if imp.target.split(".")[0] == "automations" and _rank(imp.target) > _rank(imp.source)
    ]
    assert not wrong, "move the shared piece down a layer instead:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (modules in order, the first repeated last) per tangle of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    tangles: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = set()
            while True:
                member = stack.pop()
                members.add(member)
                if member == node:
                    break
            if len(members) > 1:
                tangles.append(members)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_loop(graph, sorted(members)[0], members) for members in tangles]


def _loop(graph: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``members``."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        later = []
        for node in frontier:
            for nxt in sorted(graph.get(node, set()) & members):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    later.append(nxt)
        frontier = later
    raise AssertionError(f"{start} is in no cycle")


def test_no_import_cycles() -> None:
    """Modules of events/, notifiers/ and automations/ import each other without a cycle.

    An edge is a runtime import (at module level or inside a function) of the module
    it names: ``from events.bus import X`` is an edge to ``events.bus``, and only
    ``from events import X`` is one to ``events/__init__``. A package's ``__init__``
    that re-exports its modules is therefore in a cycle only when one of those
    modules imports the package itself, which is the cycle Python trips over.
    """
    graph: dict[str, set[str]] = {}
    for imp in _all_imports(*PACKAGES):
        if not imp.type_only and _ours(imp.target) and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
    cycles = [" -> ".join(cycle) for cycle in _cycles(graph)]
    assert not cycles, "import cycles (move the shared piece down):\n" + "\n".join(cycles)


def test_structure_stays_small() -> None:
    """automations/ keeps at most 8 top-level modules; no module passes 500 lines."""
    top_level = sorted(path.name for path in (ROOT / "automations").glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, (
        f"automations/ has {len(top_level)} top-level modules (at most "
        f"{MAX_TOP_LEVEL_MODULES}): {top_level}; move them into role folders"
    )
    long = [
        f"{path.relative_to(ROOT)}: {lines} lines"
        for top in PACKAGES
        for path in sorted((ROOT / top).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split by role):\n" + "\n".join(long)
