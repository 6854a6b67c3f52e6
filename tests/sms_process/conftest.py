"""SMS process test harness: the simulator in this process, the real `smsmta sms-process`
(and, where MTs are needed, the real `smsmta mta`) as subprocesses, a fresh database.

Tests read outcomes from the database and the simulator's counters, waiting on them with
a timeout, never sleeping in their place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import URL

from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn
from tests.mta.conftest import ACCOUNT, Harness

ROOT = Path(__file__).resolve().parents[2]


def sms_config(
    port: int,
    *,
    connections: int = 1,
    window: int = 50,
    smsc: dict[str, Any] | None = None,
    channel: dict[str, Any] | None = None,
    auto_replies: list[dict[str, str]] | None = None,
    sms_process: dict[str, Any] | None = None,
    mta: dict[str, Any] | None = None,
) -> str:
    """A mid settings file with one TX+RX account on the simulator (JSON is YAML too)."""
    config = {
        "kind": "mid",
        "host_id": "test-host",
        "logging": {"level": "info", "format": "json"},
        "mta": {
            "children": 1,
            "metrics_port": None,
            "lease_ttl": 3,
            "poll_interval": 0.2,
            "shutdown_timeout": 10,
            "retry_period": 60,
            **(mta or {}),
        },
        "sms_process": {
            "metrics_port": None,
            "poll_interval": 0.2,
            "receipt_retry_interval": 0.2,
            "shutdown_timeout": 10,
            **(sms_process or {}),
        },
        "accounts": [
            {
                "name": ACCOUNT,
                "operator": "ops",
                "connection": {
                    "mode": "tx_rx",
                    "smsc_name": "Sim",
                    "server": "127.0.0.1",
                    "port": port,
                    "system_id": "smsmta",
                    "password": "secret",
                    "connections": connections,
                },
                "channel": {"short_code": "38000", **(channel or {})},
                "throughput": {
                    "window": window,
                    "reconnect_delay": 0.2,
                    "mt_timeout": 5,
                    "bind_timeout": 5,
                    "enquire_link_period": 30,
                },
                "smsc": smsc or {},
                "auto_replies": auto_replies or [],
            }
        ],
    }
    return json.dumps(config, indent=2)


@dataclass
class Service:
    """A running smsmta service subprocess."""

    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, timeout: float = 30.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class SmsHarness(Harness):
    """The MTA harness, plus the SMS process."""

    services: list[Service]

    async def start_service(self, command: str, config_path: Path, tag: str = "") -> Service:
        log_path = config_path.with_name(f"{command}{tag}.log")
        environment = {
            **os.environ,
            DATABASE_URL_ENV: self.url.render_as_string(hide_password=False),
        }
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "smsmta.cli",
                command,
                "--config",
                str(config_path),
                env=environment,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
            )
        service = Service(process, log_path)
        self.services.append(service)
        return service

    async def start_sms_process(self, config_path: Path, tag: str = "") -> Service:
        service = await self.start_service("sms-process", config_path, tag)
        await self.wait_for_log(service, "sms_process.started", 30)
        return service

    async def wait_for_log(self, service: Service, text: str, timeout: float) -> None:
        async def logged() -> bool:
            if service.process.returncode is not None:
                pytest.fail(f"exited ({service.process.returncode}):\n{service.log()[-4000:]}")
            return text in service.log()

        await self.wait_until(logged, timeout, f"{text!r} in the log")

    async def until(
        self, condition: Callable[[], Awaitable[bool]], timeout: float, what: str, *watch: Service
    ) -> None:
        async def check() -> bool:
            for service in watch:
                if service.process.returncode is not None:
                    pytest.fail(
                        f"a service exited ({service.process.returncode}) before {what}:\n"
                        f"{service.log()[-4000:]}"
                    )
            return await condition()

        try:
            await self.wait_until(check, timeout, what)
        except pytest.fail.Exception:
            for service in watch:
                print(service.log()[-3000:])
            raise

    async def scalar(self, sql: str, *params: Any) -> Any:
        return (await self.query(sql, *params))[0][0]

    def kill_all(self) -> None:
        super().kill_all()
        for service in self.services:
            service.kill()


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
