"""The MTA parent: starts the children, restarts the ones that die, stops them all.

`Supervisor(config_path, config, url).run()`:

- syncs `mid.external_account` with the settings file;
- starts `mta.children` child processes (`python -m mta.child`), real OS processes that
  share nothing but the database;
- passes its pid to the children (SMSMTA_MTA_SUPERVISOR_PID): a child whose supervisor
  died (SIGKILL, OOM) drains and exits by itself instead of sending on unsupervised
  next to the children of the supervisor started in its place;
- restarts a child that exits without being asked, after a back-off that doubles from
  1 s to 30 s and resets once a child has lived a minute (logged and counted);
- on SIGTERM or SIGINT forwards SIGTERM to every child, waits for them to drain (their
  shutdown_timeout plus a margin), kills what is left, and returns 0;
- tells systemd it is ready once the children are started, and keeps its watchdog fed
  from the event loop (smsmta.systemd);
- serves /metrics on `mta.metrics_port`: the children write their metrics to files in
  PROMETHEUS_MULTIPROC_DIR, which the MTA command sets before anything imports
  prometheus_client, and the supervisor serves their sum.

Touches: child processes, signals, the database (account sync), one HTTP socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psycopg
import structlog
from prometheus_client import CollectorRegistry, multiprocess

from smsmta import obs
from smsmta.accounts import sync_accounts
from smsmta.backoff import Backoff
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn
from smsmta.settings import MidConfig
from smsmta.systemd import Notifier

log = structlog.get_logger("mta.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Read by mta.child: the supervisor's pid, so that a child outliving it stops.
SUPERVISOR_PID_ENV = "SMSMTA_MTA_SUPERVISOR_PID"
BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0
#: the wait before restarting a child after its n-th death in a row
RESTART = Backoff(BACKOFF_START, BACKOFF_MAX)


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    deaths_in_a_row: int = 0  # a death after STABLE_AFTER of life starts a new row
    restart_at: float | None = None
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # exit codes


class Supervisor:
    def __init__(self, config_path: str, config: MidConfig, url: str) -> None:
        self.config_path = config_path
        self.config = config
        self.url = url
        self.slots = [_Slot(index) for index in range(config.mta.children)]
        self.stopping = asyncio.Event()
        self.metrics_port: int | None = None

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[DATABASE_URL_ENV] = self.url
        env[SUPERVISOR_PID_ENV] = str(os.getpid())  # a child whose parent is gone stops
        return env

    def spawn(self, slot: _Slot) -> None:
        command = [
            sys.executable,
            "-m",
            "mta.child",
            "--config",
            self.config_path,
            "--index",
            str(slot.index),
        ]
        slot.process = subprocess.Popen(command, env=self.child_env())
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("mta.child_spawned", index=slot.index, pid=slot.process.pid)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        async with await psycopg.AsyncConnection.connect(
            libpq_dsn(self.url), autocommit=True
        ) as conn:
            ids = await sync_accounts(conn, self.config)
        log.info("mta.accounts_synced", accounts=sorted(ids))
        self.metrics_port = self._serve_metrics()
        for slot in self.slots:
            self.spawn(slot)
        systemd = Notifier()
        systemd.ready(f"{len(self.slots)} children, accounts: {', '.join(sorted(ids))}")
        keepalive = systemd.watchdog_interval()
        last_keepalive = 0.0
        while not self.stopping.is_set():
            self._watch()
            now = time.monotonic()
            if keepalive is not None and now - last_keepalive >= keepalive:
                systemd.keepalive()
                last_keepalive = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.2)
        systemd.stopping()
        return await self._stop()

    def _watch(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and (code := process.poll()) is not None:
                self._forget_metrics(process.pid)
                slot.process = None
                slot.history.append(code)
                lived = now - slot.started_at
                slot.deaths_in_a_row = 1 if lived >= STABLE_AFTER else slot.deaths_in_a_row + 1
                delay = RESTART.delay(slot.deaths_in_a_row)
                slot.restart_at = now + delay
                log.warning(
                    "mta.child_died",
                    index=slot.index,
                    pid=process.pid,
                    exit_code=code,
                    lived_seconds=round(lived, 1),
                    restart_in=delay,
                )
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                slot.restarts += 1
                obs.MTA_CHILD_RESTARTS.inc()
                self.spawn(slot)

    async def _stop(self) -> int:
        log.info("mta.stopping", children=len(self.slots))
        running = [slot.process for slot in self.slots if slot.process is not None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.mta.shutdown_timeout + 15.0
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            await asyncio.sleep(0.1)
        codes = []
        for process in running:
            if process.poll() is None:
                log.error("mta.child_killed", pid=process.pid, reason="did not drain in time")
                process.kill()
                process.wait()
            codes.append(process.returncode)
            self._forget_metrics(process.pid)
        log.info("mta.stopped", exit_codes=codes)
        return 0

    def _serve_metrics(self) -> int | None:
        path = os.environ.get(MULTIPROC_ENV)
        if not path or self.config.mta.metrics_port is None:
            return None
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return obs.serve_metrics(
            self.config.mta.metrics_host, self.config.mta.metrics_port, registry
        )

    def _forget_metrics(self, pid: int) -> None:
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(pid)
