"""Fixtures shared by the automations tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from automations.state import StateStore
from events.database import create_engine


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """State written through the driver as SQL text: run on both dialects."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
async def state(url: str) -> AsyncIterator[StateStore]:
    """A state store with its tables, on each dialect of ``url``."""
    engine = create_engine(url)
    store = StateStore(engine)
    await store.create_tables()
    yield store
    await engine.dispose()
