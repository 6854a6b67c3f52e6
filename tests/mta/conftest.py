"""MTA test harness: the simulator in this process, the real `smsmta mta` as a subprocess.

The MTA runs exactly as an operator runs it (`python -m smsmta.cli mta --config FILE`),
its children real processes, against a fresh PostgreSQL database and the simulator on
127.0.0.1. Tests fill the queue with `smsmta.enqueue` and read outcomes from the
database and from the simulator's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from sqlalchemy import URL

from smsmta.accounts import sync_accounts
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn
from smsmta.demo import free_port as free_port  # re-exported to the tests
from smsmta.enqueue import DeliverySpec, create_delivery, enqueue
from smsmta.settings import MidConfig, load
from smsmta.simulator import SimulatorConfig, Smsc

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "ops_sms"


def mid_config(
    port: int,
    *,
    children: int = 2,
    connections: int = 2,
    window: int = 10,
    rate: float = 0,
    max_binds: int = 0,
    metrics_port: int | None = None,
    mt_timeout: float = 5.0,
    mode: str = "tx_rx",
    smsc: dict[str, Any] | None = None,
    mta: dict[str, Any] | None = None,
) -> str:
    """A mid settings file for one account on the simulator (JSON is YAML too)."""
    config = {
        "kind": "mid",
        "host_id": "test-host",
        "logging": {"level": "info", "format": "json"},
        "mta": {
            "children": children,
            "metrics_port": metrics_port,
            "lease_ttl": 3,
            "poll_interval": 0.2,
            "shutdown_timeout": 10,
            "retry_period": 60,
            **(mta or {}),
        },
        "accounts": [
            {
                "name": ACCOUNT,
                "operator": "ops",
                "connection": {
                    "mode": mode,
                    "smsc_name": "Sim",
                    "server": "127.0.0.1",
                    "port": port,
                    "system_id": "smsmta",
                    "password": "secret",
                    "connections": connections,
                },
                "throughput": {
                    "window": window,
                    "max_mt_per_second": rate,
                    "max_binds": max_binds,
                    "reconnect_delay": 0.2,
                    "mt_timeout": mt_timeout,
                    "bind_timeout": 5,
                    "enquire_link_period": 30,
                },
                "smsc": smsc or {},
            }
        ],
    }
    return json.dumps(config, indent=2)


@dataclass
class Mta:
    """A running `smsmta mta` and what it needs."""

    process: asyncio.subprocess.Process
    config_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[psutil.Process]:
        return [
            child
            for child in psutil.Process(self.pid).children()
            if "mta.child" in " ".join(child.cmdline())
        ]

    async def stop(self, timeout: float = 60.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Harness:
    url: URL
    tmp_path: Path
    dsn: str
    started: list[Mta] = field(default_factory=list)

    async def account_id(self, config: MidConfig, name: str = ACCOUNT) -> int:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            return (await sync_accounts(conn, config))[name]

    def write_config(self, text: str, name: str = "mid.yaml") -> tuple[Path, MidConfig]:
        path = self.tmp_path / name
        path.write_text(text)
        config = load(path)
        assert isinstance(config, MidConfig)
        return path, config

    async def enqueue(
        self,
        config: MidConfig,
        count: int,
        text: Callable[[int], str] = lambda i: f"Hello number {i}",
        spec: DeliverySpec | None = None,
        address: Callable[[int], str] = lambda i: f"+3361{i:07d}",
    ) -> int:
        account_id = await self.account_id(config)
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            delivery_id = await create_delivery(
                conn, account_id, spec or DeliverySpec(marketing_delivery_id=f"d{count}")
            )
            await enqueue(
                conn, delivery_id, account_id, ((i, address(i), text(i)) for i in range(count))
            )
        return delivery_id

    async def start_mta(self, config_path: Path, **env: str) -> Mta:
        # "mta-<config>.log": the mid server started from the same file logs to "mid.log"
        log_path = config_path.with_name(f"mta-{config_path.stem}.log")
        environment = {
            **os.environ,
            DATABASE_URL_ENV: self.url.render_as_string(hide_password=False),
            **env,
        }
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "smsmta.cli",
                "mta",
                "--config",
                str(config_path),
                env=environment,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,  # one process group: teardown kills it whole
            )
        mta = Mta(process, config_path, log_path)
        self.started.append(mta)
        return mta

    def kill_all(self) -> None:
        for mta in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(mta.pid, signal.SIGKILL)

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cursor = await conn.execute(sql, params or None)
            return await cursor.fetchall()

    async def statuses(self) -> dict[str, int]:
        rows = await self.query("SELECT status::text, count(*) FROM mid.broad_log GROUP BY 1")
        return dict(rows)

    async def wait_until(
        self,
        condition: Callable[[], Awaitable[bool]],
        timeout: float,
        what: str,
        mta: Mta | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await condition():
            if mta is not None and mta.process.returncode is not None:
                pytest.fail(
                    f"the MTA exited ({mta.process.returncode}) before {what}:\n{mta.log()[-4000:]}"
                )
            if loop.time() > deadline:
                log = mta.log()[-4000:] if mta else ""
                pytest.fail(
                    f"timed out after {timeout} s waiting for {what}: "
                    f"{await self.statuses()}\n{log}"
                )
            await asyncio.sleep(0.2)


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
