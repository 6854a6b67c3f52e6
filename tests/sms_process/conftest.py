"""SMS process test harness: the simulator in this process, the real `smsmta sms-process`
(and, where MTs are needed, the real `smsmta mta`) as subprocesses, a fresh database.

Tests read outcomes from the database and the simulator's counters, waiting on them with
a timeout, never sleeping in their place. The harness itself is the test kit's
(smsmta.testing.harness); this file holds the fixtures and re-exports what the tests import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import URL

from smsmta.db.engine import libpq_dsn
from smsmta.testing.harness import Service as Service  # re-exported to the tests
from smsmta.testing.harness import SmsHarness as SmsHarness
from smsmta.testing.harness import sms_config as sms_config


@pytest.fixture
async def sms(migrated_db_url: URL, tmp_path: Path) -> AsyncIterator[SmsHarness]:
    harness = SmsHarness(migrated_db_url, tmp_path, libpq_dsn(migrated_db_url))
    harness.services = []
    try:
        yield harness
    finally:
        harness.kill_all()


async def connect(dsn: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)
