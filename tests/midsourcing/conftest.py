"""Midsourcing test harness: a migrated database and a real mid API for a test module.

The mid API runs in a thread of the test process under uvicorn (the same application
`smsmta mid` serves), on a free port of 127.0.0.1, against a database created for the
module and dropped after it. Operators: `ops` (ADMINISTRATION) and `viewer` (no right).
Accounts: `ops_sms` (enabled, transliteration on, source number +33600000000) and
`ops_off` (disabled).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy import URL

from midsourcing import auth
from midsourcing.server import uvicorn_config
from smsmta.db.engine import libpq_dsn
from smsmta.settings import MidConfig, load
from smsmta.testing.settings import mid_api_accounts, mid_document
from smsmta.testing.stack import free_port as free_port  # re-exported to the tests
from smsmta.testing.stack import scratch_database

OPS_PASSWORD = "correct horse battery"
VIEWER_PASSWORD = "viewer password"


def mid_settings(port: int, smpp_port: int = 2775, **mid: Any) -> dict[str, Any]:
    """A mid settings document with the two test accounts (JSON is YAML too)."""
    return mid_document(
        mid_api_accounts(smpp_port),
        host_id=None,
        mid={
            "listen": "127.0.0.1",
            "port": port,
            "metrics_port": None,
            "login_free_failures": 3,
            "login_max_delay": 60,
            # long enough that the test of the slow-down never races argon2 on a busy machine
            "login_base_delay": 30,
            **mid,
        },
    )


@dataclass
class MidServer:
    url: str
    dsn: str
    db_url: URL
    config: MidConfig

    def client(self, login: str = "ops", password: str = OPS_PASSWORD) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(login, password), timeout=30)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def module_db(pg_server_url: URL) -> Iterator[URL]:
    """A database with both schemas migrated, for one test module."""
    with scratch_database(pg_server_url, "smsmta_mid", migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def mid_server(module_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MidServer]:
    port = free_port()
    path = Path(tmp_path_factory.mktemp("mid")) / "mid.yaml"
    path.write_text(json.dumps(mid_settings(port), indent=2))
    config = load(path)
    assert isinstance(config, MidConfig)
    dsn = libpq_dsn(module_db)
    auth.add_operator(dsn, "ops", "Operations", OPS_PASSWORD, ["ADMINISTRATION"])
    auth.add_operator(dsn, "viewer", "Read only", VIEWER_PASSWORD, [])
    server = uvicorn.Server(uvicorn_config(config, dsn))
    thread = threading.Thread(target=server.run, name="mid-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the mid API thread died"
        assert time.monotonic() < deadline, "the mid API did not start"
        time.sleep(0.05)
    try:
        yield MidServer(f"http://127.0.0.1:{port}", dsn, module_db, config)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
