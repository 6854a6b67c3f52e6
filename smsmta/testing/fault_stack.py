"""The fault-injection stack: the whole stack under a steady load, for one fault at a time.

`FaultStack` runs what an operator runs, each service a real subprocess of
``python -m smsmta.cli``: the mid server, the MTA (supervisor and children), the SMS
process and the marketing service, against a PostgreSQL of its own (a dedicated embedded
pgserver, so that restarting it touches no other test), and the SMSC simulator in this
process behind a `TcpProxy` (both the MTA's transmitters and the SMS process's receivers
go through it). It reuses the MTA and SMS process harnesses (`smsmta.testing.harness`) for starting,
killing and querying services. The faults and the run of one fault are in
`smsmta.testing.faults`.

`run_fault(stack, fault, sizes)` puts one delivery of `sizes.messages` messages, each
to a destination of its own, on the queue (directly, or through the marketing service
for the faults of the midsourcing link), waits for the load to be steady, injects the
fault, clears it after `sizes.duration` seconds, waits for every message to reach a
final status, and returns a `FaultRow`:

- lost: messages that are not final (delivered or failed) once the run drained, plus
  messages missing from the queue (and, for marketing loads, marketing messages not
  final in the marketing KPIs);
- duplicates: submits the simulator accepted for a (destination, text, reference) it
  had already accepted (`Smsc.counters.duplicates`, a delta over the run);
- bound: window x connections x children whose responses the fault may lose (0 where
  no response can be lost: throttling, a slow SMSC, killed services off the MT path);
- recovery: from the end of the fault to the first half-second whose MT rate is back
  at 80% of the rate before the fault (or, when the queue ran dry first, to the first
  accepted submit after the fault);
- MT/s before, during and after the fault, from the simulator's accepted count sampled
  every 100 ms.

Touches: a pgserver data directory under /tmp (stopped at the end), subprocesses (killed
at the end whatever happens), sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import URL

from midsourcing.auth import add_operator
from smsmta.db import migrate
from smsmta.db.engine import libpq_dsn, normalize_url
from smsmta.settings import MarketingConfig, MidConfig, load
from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.testing.harness import Mta, Service, SmsHarness, sms_config
from smsmta.testing.proxy import TcpProxy
from smsmta.testing.settings import marketing_document
from smsmta.testing.stack import free_port

PASSWORD = "fault operator password"
FINAL = ("delivered", "failed")
MARKETING_FINAL = ("delivered", "failed_hard", "failed_soft")


@dataclass(frozen=True)
class Sizes:
    """How hard and how long: the test uses the defaults, the benchmark larger ones."""

    messages: int = 600
    rate: int = 300  # the account's max_mt_per_second: a steady load
    warmup: float = 0.8  # seconds of load before the fault
    duration: float = 1.0  # seconds the fault lasts (some faults need longer, see Fault)
    drain_timeout: float = 60.0
    children: int = 2
    connections: int = 2
    window: int = 10
    mt_timeout: float = 3.0  # above the slow SMSC's 2 s
    enquire_link_period: float = 1.0
    dlr_delay_ms: float = 20.0
    push_chunk_size: int = 100


# --------------------------------------------------------------------------------------------
# A PostgreSQL of our own, which the PostgreSQL fault may restart
# --------------------------------------------------------------------------------------------


class OwnPostgres:
    """A pgserver in a directory made for it; `stop_server` / `start_server` for the fault."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="smsmta-faults-", dir="/tmp"))
        self.pgdata = self.root / "pgdata"
        self.server: Any = None

    def start(self) -> URL:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset: harmless
            warnings.simplefilter("ignore", UserWarning)
            import pgserver

            self.server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        return normalize_url(self.server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        import pgserver

        pg_ctl = pgserver.pg_ctl  # type: ignore[attr-defined]  # generated at import
        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop_server(self) -> None:
        """Fast shutdown: every session is cut, as when the server restarts."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start_server(self) -> None:
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"),
            "start",
        )  # fmt: skip

    def cleanup(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.cleanup()
            # a server started again by pg_ctl (the postgres_restart fault) is not the one
            # pgserver tracks: its cleanup leaves it running, so stop it here too
            with contextlib.suppress(Exception):
                self._pg_ctl("-w", "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


@dataclass
class FaultStack:
    harness: SmsHarness
    postgres: OwnPostgres
    smsc: Smsc
    proxy: TcpProxy
    sizes: Sizes
    mid_path: Path
    marketing_path: Path
    mid_port: int
    mta: Mta | None = None
    sms_process: Service | None = None
    mid_server: Service | None = None
    marketing: Service | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)
    runs: int = 0

    @property
    def mid_config(self) -> MidConfig:
        config = load(self.mid_path)
        assert isinstance(config, MidConfig)
        return config

    @property
    def marketing_config(self) -> MarketingConfig:
        config = load(self.marketing_path)
        assert isinstance(config, MarketingConfig)
        return config

    def _tag(self, name: str) -> str:
        self.restarts[name] = self.restarts.get(name, 0) + 1
        return f"-{self.restarts[name]}"

    async def start_mta(self) -> Mta:
        path = self.mid_path.with_name(f"mta{self._tag('mta')}.yaml")
        path.write_text(self.mid_path.read_text())
        self.mta = await self.harness.start_mta(path)
        return self.mta

    async def start_sms_process(self) -> Service:
        self.sms_process = await self.harness.start_sms_process(
            self.mid_path, self._tag("sms-process")
        )
        return self.sms_process

    async def start_mid_server(self) -> Service:
        service = await self.harness.start_service("mid", self.mid_path, self._tag("mid"))
        await wait_http(f"http://127.0.0.1:{self.mid_port}/healthz", service)
        self.mid_server = service
        return service

    async def start_marketing(self) -> Service:
        self.marketing = await self.harness.start_service(
            "marketing", self.marketing_path, self._tag("marketing")
        )
        return self.marketing

    def services(self) -> list[Any]:
        return [s for s in (self.mta, self.sms_process, self.mid_server, self.marketing) if s]

    async def check_alive(self, may_exit: tuple[str, ...] = ()) -> None:
        """Fail with the log tail of a service that exited without being asked.

        A service named in `may_exit` that exited with an error is started again, as
        systemd's Restart=on-failure would, and the exit is recorded in `exits`.
        """
        for service in self.services():
            code = service.process.returncode
            if code is None:
                continue
            name = service.log_path.name.rsplit("-", 1)[0]
            if name in may_exit and code != 0:
                self.exits.append(f"{name} exited {code}, restarted")
                await {"sms-process": self.start_sms_process, "mid": self.start_mid_server}[name]()
                continue
            raise AssertionError(
                f"{service.log_path.name} exited ({code}):\n{service.log()[-3000:]}"
            )

    async def stop(self) -> None:
        """SIGTERM to every service at once; what does not exit in time is killed later."""
        running = [s for s in self.services() if s.process.returncode is None]
        await asyncio.gather(*(s.stop(30) for s in running), return_exceptions=True)


def mid_settings(proxy_port: int, mid_port: int, sizes: Sizes) -> str:
    """The mid settings of the fault runs: one TX+RX account behind the proxy."""
    config = json.loads(
        sms_config(
            proxy_port,
            connections=sizes.connections,
            window=sizes.window,
            mta={"children": sizes.children, "retry_period": 2, "lease_ttl": 3},
        )
    )
    throughput = config["accounts"][0]["throughput"]
    throughput.update(
        max_mt_per_second=sizes.rate,
        mt_timeout=sizes.mt_timeout,
        enquire_link_period=sizes.enquire_link_period,
        reconnect_delay=0.2,
        bind_timeout=3,
    )
    config["mid"] = {"listen": "127.0.0.1", "port": mid_port, "metrics_port": None}
    return json.dumps(config, indent=2)


def marketing_settings(mid_port: int, sizes: Sizes) -> str:
    document = marketing_document(
        mid_port,
        "ops",
        PASSWORD,
        {"name": "promo", "label": "Promotion"},
        level="info",
        timeout=10,
        metrics_port=None,
        pull_interval=0.5,
        push_interval=0.2,
        push_chunk_size=sizes.push_chunk_size,
        retry_initial=0.2,
        retry_max=1,
        pull_page_size=5000,
    )
    return json.dumps(document, indent=2)


@asynccontextmanager
async def fault_stack(tmp_path: Path, sizes: Sizes) -> AsyncIterator[FaultStack]:
    """The whole stack, started; everything stopped (or killed) on the way out."""
    postgres = OwnPostgres()
    harness: SmsHarness | None = None
    stack: FaultStack | None = None
    try:
        url = await asyncio.to_thread(postgres.start)
        for side in migrate.SIDE_NAMES:
            await asyncio.to_thread(migrate.upgrade, url, side)
        harness = SmsHarness(url, tmp_path, libpq_dsn(url))
        harness.services = []
        simulator = SimulatorConfig(
            port=0, seed=11, dlr_delay_ms=sizes.dlr_delay_ms, deliver_timeout_ms=5_000
        )
        async with Smsc(simulator) as smsc, TcpProxy("127.0.0.1", smsc.port) as proxy:
            mid_port = free_port()
            mid_path = tmp_path / "mid.yaml"
            mid_path.write_text(mid_settings(proxy.port, mid_port, sizes))
            marketing_path = tmp_path / "marketing.yaml"
            marketing_path.write_text(marketing_settings(mid_port, sizes))
            await asyncio.to_thread(
                add_operator, harness.dsn, "ops", "Operations", PASSWORD, ["ADMINISTRATION"]
            )
            stack = FaultStack(
                harness, postgres, smsc, proxy, sizes, mid_path, marketing_path, mid_port
            )
            await stack.start_mid_server()
            await stack.start_mta()
            await stack.start_sms_process()
            await stack.start_marketing()
            try:
                yield stack
            finally:
                await stack.stop()
    finally:
        if harness is not None:
            harness.kill_all()
        await asyncio.to_thread(postgres.cleanup)


async def wait_http(url: str, service: Service, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            if service.process.returncode is not None:
                raise AssertionError(f"the service exited:\n{service.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer:\n{service.log()[-3000:]}")
            await asyncio.sleep(0.1)


async def wait_for(
    condition: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    stack: FaultStack,
    may_exit: tuple[str, ...] = (),
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        await stack.check_alive(may_exit)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def try_query(stack: FaultStack, sql: str, *params: Any) -> list[tuple[Any, ...]] | None:
    """A query, or None while PostgreSQL is away (the PostgreSQL fault)."""
    try:
        return await stack.harness.query(sql, *params)
    except psycopg.OperationalError:
        return None
