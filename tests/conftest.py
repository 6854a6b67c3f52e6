"""Fixtures shared by every test: a real PostgreSQL, and a fresh database per test.

SMSMTA_DATABASE_URL, when set, names a server the tests may create databases on (for
example the machine's PostgreSQL: postgresql://postgres@127.0.0.1:5432/postgres).
Otherwise the session starts a private embedded PostgreSQL (pgserver) in a directory
made for it under /tmp, and stops it (and removes the directory) at the end. No mock
database anywhere. The server, the scratch databases and the folders come from the test
kit (smsmta.testing.stack).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import URL

from smsmta.db import migrate
from smsmta.testing.stack import embedded_home as embedded_home  # re-exported to the tests
from smsmta.testing.stack import scratch_database as scratch_database
from smsmta.testing.stack import server


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
    with server(prefix="smsmta-tests-") as (url, _):
        yield url


@pytest.fixture
def embedded_tmp() -> Iterator[Path]:
    """Like tmp_path, for tests that start an embedded PostgreSQL inside it (pytest's
    own temporary folders are 0700)."""
    folder = embedded_home("smsmta-test-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
