"""Harnesses for the real services under test: `smsmta mta`, `smsmta sms-process`, ...

`Harness` runs the MTA exactly as an operator runs it (`python -m smsmta.cli mta --config
FILE`), its children real processes, against a database given by URL; `SmsHarness` adds
the SMS process (and any other service). `mid_config()` and `sms_config()` write the
settings of one account on the simulator at 127.0.0.1. The tests' fixtures
(tests/mta/conftest.py, tests/sms_process/conftest.py), tests/faults, tests/independent and
bench/fuzz_session.py build on them. Waiting fails the pytest way (`pytest.fail`), so this
module needs pytest (a dev dependency), as the test kit does.

Touches: subprocesses (each in its own process group, killed whole by `kill_all`), the
database, files in the folder given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from sqlalchemy import URL

from smsmta.accounts import sync_accounts
from smsmta.queue.enqueue import DeliverySpec, create_delivery, enqueue
from smsmta.settings import MidConfig, load
from smsmta.testing.settings import mid_document, simulator_account
from smsmta.testing.stack import cli_command, service_env

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the services run from it
ACCOUNT = "ops_sms"
TEST_MTA: dict[str, Any] = {  # the mta section of the tests' settings, before their changes
    "children": 1,
    "metrics_port": None,
    "lease_ttl": 3,
    "poll_interval": 0.2,
    "shutdown_timeout": 10,
    "retry_period": 60,
}
TEST_THROUGHPUT: dict[str, Any] = {  # the account's throughput, but for window and mt_timeout
    "reconnect_delay": 0.2,
    "bind_timeout": 5,
    "enquire_link_period": 30,
}


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
    throughput = {
        "window": window,
        "max_mt_per_second": rate,
        "max_binds": max_binds,
        "mt_timeout": mt_timeout,
    }
    account = _test_account(port, connections, smsc, throughput, mode=mode)
    return _test_host(
        account, mta={**TEST_MTA, "children": children, "metrics_port": metrics_port, **(mta or {})}
    )


def _test_account(
    port: int,
    connections: int,
    smsc: dict[str, Any] | None,
    throughput: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    """The tests' one account (ACCOUNT, operator ops) on the simulator at 127.0.0.1:`port`."""
    return simulator_account(
        ACCOUNT,
        "ops",
        port,
        connections=connections,
        throughput={**TEST_THROUGHPUT, **throughput},
        smsc=smsc or {},
        **fields,
    )


def _test_host(account: dict[str, Any], **sections: Any) -> str:
    return json.dumps(
        mid_document([account], host_id="test-host", level="info", **sections), indent=2
    )


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
        process = await self.spawn(log_path, "mta", "--config", str(config_path), **env)
        mta = Mta(process, config_path, log_path)
        self.started.append(mta)
        return mta

    async def spawn(self, log_path: Path, *args: str, **env: str) -> asyncio.subprocess.Process:
        """`python -m smsmta.cli *args` on this database, logging to `log_path`, in a process
        group of its own (teardown kills it whole)."""
        environment = service_env(self.url.render_as_string(hide_password=False), **env)
        with log_path.open("wb") as log:
            return await asyncio.create_subprocess_exec(
                *cli_command(*args),
                env=environment,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
            )

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
    account = _test_account(
        port,
        connections,
        smsc,
        {"window": window, "mt_timeout": 5},
        channel={"short_code": "38000", **(channel or {})},
        auto_replies=auto_replies or [],
    )
    return _test_host(
        account,
        mta={**TEST_MTA, **(mta or {})},
        sms_process={
            "metrics_port": None,
            "poll_interval": 0.2,
            "receipt_retry_interval": 0.2,
            "shutdown_timeout": 10,
            **(sms_process or {}),
        },
    )


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
        process = await self.spawn(log_path, command, "--config", str(config_path))
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
