"""events.database: SQLite connection settings and the driver-level value encoders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import AwareDatetime, TypeAdapter
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from events.database import (
    SQLITE_WAL_CHECKPOINT_PAGES,
    UtcDateTime,
    create_engine,
    driver_bool,
    driver_json,
    driver_time,
)


async def test_sqlite_checkpoints_the_wal_every_10000_pages(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            pages = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        assert pages == SQLITE_WAL_CHECKPOINT_PAGES == 10_000
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 21, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=-7))),
        datetime(1999, 1, 2, 3, 4, 5, 999999, tzinfo=timezone(timedelta(minutes=330))),
        datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC),
        # pydantic's own tzinfo, as parsed events carry it
        TypeAdapter(AwareDatetime).validate_json('"2026-11-21T10:00:00.25Z"'),
        TypeAdapter(AwareDatetime).validate_json('"2026-11-21T10:00:00+02:00"'),
    ],
)
def test_driver_time_is_what_utcdatetime_binds(moment: datetime) -> None:
    dialect = sqlite.dialect()
    processor = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None  # the decorator's conversion, then SQLite's DATETIME text
    assert driver_time(moment, "sqlite") == processor(moment)
    assert driver_time(moment, "postgresql") == moment
    assert driver_time(moment, "postgresql").tzinfo == UTC  # type: ignore[union-attr]


def test_driver_values_refuse_naive_times_and_encode_json_and_bools() -> None:
    with pytest.raises(ValueError, match="naive"):
        driver_time(datetime(2026, 11, 21, 10, 0), "sqlite")
    assert driver_json({"ü": [1, None]}) == '{"ü":[1,null]}'
    assert (driver_bool(True, "sqlite"), driver_bool(True, "postgresql")) == (1, True)


def test_driver_time_repeats_are_answered_alike() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    shifted = moment.astimezone(timezone(timedelta(hours=2)))  # the same instant
    assert driver_time(moment, "sqlite") == driver_time(shifted, "sqlite")
    assert driver_time(shifted, "sqlite") == "2026-01-01 00:00:00.000000"
    with pytest.raises(ValueError, match="naive"):  # not mistaken for the moment just seen
        driver_time(moment.replace(tzinfo=None), "sqlite")
    assert driver_time(moment + timedelta(microseconds=1), "sqlite").endswith(".000001")  # type: ignore[union-attr]
    assert driver_time(shifted, "postgresql") == moment
