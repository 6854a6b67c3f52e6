"""Fixtures shared by every test: a real PostgreSQL, and a fresh database per test.

SMSMTA_DATABASE_URL, when set, names a server the tests may create databases on (for
example the machine's PostgreSQL: postgresql://postgres@127.0.0.1:5432/postgres).
Otherwise the session starts a private embedded PostgreSQL (pgserver) in a directory
made for it under /tmp, and stops it at the end. No mock database anywhere.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import structlog
from sqlalchemy import URL

from smsmta.db import migrate
from smsmta.db.engine import DATABASE_URL_ENV, embedded, libpq_dsn, normalize_url


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs a CLI command in this process (click's runner) sets up logging for
    that tool (level, handlers): put back what was there, or later tests lose records."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[URL]:
    """URL of a PostgreSQL server on which the tests may create and drop databases."""
    named = os.environ.get(DATABASE_URL_ENV)
    if named:
        yield normalize_url(named)
        return
    root = embedded_home("smsmta-tests-")
    with embedded(root / "pgdata") as url:
        yield url


def embedded_home(prefix: str) -> Path:
    """A new folder under /tmp where an embedded PostgreSQL may live: mkdtemp makes it
    0700, which the server's system user (as root) could not traverse; 0711 lets it pass
    without letting anyone list the folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o711)
    return folder


@pytest.fixture
def embedded_tmp() -> Iterator[Path]:
    """Like tmp_path, for tests that start an embedded PostgreSQL inside it (pytest's
    own temporary folders are 0700)."""
    folder = embedded_home("smsmta-test-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def scratch_database(server: URL, prefix: str, *, migrated: bool = False) -> Iterator[URL]:
    """A new database on `server` (both schemas at their heads if `migrated`), dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = libpq_dsn(server)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    try:
        if migrated:
            for side in migrate.SIDE_NAMES:
                migrate.upgrade(url, side)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db_url(pg_server_url: URL) -> Iterator[URL]:
    """A new empty database for one test, dropped afterwards."""
    with scratch_database(pg_server_url, "smsmta_test") as url:
        yield url


@pytest.fixture
def migrated_db_url(fresh_db_url: URL) -> URL:
    """A fresh database with both schemas at their heads."""
    for side in migrate.SIDE_NAMES:
        migrate.upgrade(fresh_db_url, side)
    return fresh_db_url
