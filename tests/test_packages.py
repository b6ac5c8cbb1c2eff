"""The three packages are ours, and their public surfaces are honest."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["events", "automations", "notifiers"])
def test_package_imports_from_this_repo(name: str) -> None:
    """PyPI has unrelated `events` and `notifiers`: ours must be the ones imported."""
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / name


@pytest.mark.parametrize("name", ["events", "automations", "notifiers"])
def test_all_names_exist(name: str) -> None:
    """Every name in __all__ is importable from the package."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", [])
    assert exported, f"{name} has no __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names {attr} which does not exist"


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in {"import", "from"}:
                found.add(words[1].split(".")[0])
    return found


def test_arrows_point_down_the_layout() -> None:
    """events/ and notifiers/ depend on nothing of ours; automations/ may use both."""
    assert not _imports("events") & {"automations", "notifiers"}
    assert not _imports("notifiers") & {"automations", "events"}
