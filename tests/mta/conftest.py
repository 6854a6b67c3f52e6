"""MTA test harness: the simulator in this process, the real `smsmta mta` as a subprocess.

The MTA runs exactly as an operator runs it (`python -m smsmta.cli mta --config FILE`),
its children real processes, against a fresh PostgreSQL database and the simulator on
127.0.0.1. Tests fill the queue with `smsmta.queue.enqueue` and read outcomes from the
database and from the simulator's counters. The harness itself is the test kit's
(smsmta.testing.harness); this file holds the fixtures and re-exports what the tests import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import URL

from smsmta.db.engine import libpq_dsn
from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.testing.harness import ACCOUNT as ACCOUNT  # re-exported to the tests
from smsmta.testing.harness import ROOT as ROOT
from smsmta.testing.harness import Harness as Harness
from smsmta.testing.harness import Mta as Mta
from smsmta.testing.harness import mid_config as mid_config
from smsmta.testing.stack import free_port as free_port


@pytest.fixture
async def harness(migrated_db_url: URL, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(migrated_db_url, tmp_path, libpq_dsn(migrated_db_url))
    try:
        yield harness
    finally:
        harness.kill_all()


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with Smsc(SimulatorConfig(port=0, seed=7)) as simulator:
        yield simulator
