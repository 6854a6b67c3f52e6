"""Soak: the real MTA and SMS process at a steady rate for N minutes, with periodic faults.

What runs, all on this machine: a PostgreSQL (embedded pgserver, or `--database-url`'s
server; a fresh database is created in it and dropped at the end), the SMSC simulator in
its own process (receipts after `--dlr-delay-ms`, `--fail-rate` of them failures, its
control endpoint on), the real `smsmta mta` (supervisor + `--children` children) and the
real `smsmta sms-process`, both started as an operator starts them. The bench enqueues
straight into the mid queue with `smsmta.queue.enqueue` (as bench/mta.py does) at `--rate`
messages per second, each message to its own destination so that the simulator's
`duplicates` counter counts exactly the MTs it received twice.

Every `--fault-every` seconds one fault, in turn:
  kill-child     SIGKILL one MTA child (the supervisor restarts it);
  drop-links     the simulator aborts every SMPP connection (transmitters and receivers);
  kill-sms       SIGKILL the SMS process, then start it again;
  restart-mta    SIGTERM the MTA supervisor (it drains and exits), then start it again.

Every minute one row: offered messages, MT/s at the simulator, messages reaching a final
status (receipts reconciled), queue depth (pending + sending) and messages awaiting their
receipt (sent), RSS and open fds of every process (PostgreSQL: PSS and fds summed over
its processes), PostgreSQL client connections by service (pg_stat_activity's
application_name: the bench sets PGAPPNAME for the services it starts), cumulative
duplicates and the last fault. At the end the queue drains and the totals follow: lost
(neither final nor queued: must be 0), duplicates against the bound the faults allow,
and the trend of every resource (first vs last quarter, least-squares slope per minute).

Exit status: 0 when nothing was lost and no resource grows steadily; 1 otherwise; 2 for
bad arguments. Touches: child processes, local ports, a directory under /tmp, a database.

Usage: .venv/bin/python bench/soak.py [--minutes 30] [--rate 300] [--fault-every 120]
       [--children 2] [--connections 2] [--window 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smsmta.accounts import sync_accounts  # noqa: E402
from smsmta.db import migrate  # noqa: E402
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn  # noqa: E402
from smsmta.queue.enqueue import DeliverySpec, create_delivery, enqueue  # noqa: E402
from smsmta.settings import MidConfig, load  # noqa: E402
from smsmta.simulator import SimulatorConfig, Smsc  # noqa: E402
from smsmta.testing.conditions import describe_conditions, postmaster_pid  # noqa: E402
from smsmta.testing.settings import mid_document, simulator_account  # noqa: E402
from smsmta.testing.stack import cli_command, scratch_database, server, service_env  # noqa: E402

ACCOUNT = "soak_sms"
FAULTS = ("kill-child", "drop-links", "kill-sms", "restart-mta")
MIB = 2**20


# --- the simulator, in its own process ----------------------------------------------------


def simulator_process(config: SimulatorConfig, conn: multiprocessing.connection.Connection) -> None:
    """Serve `config` until told to stop; answer "stats", "drop" and "stop" on `conn`."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        async with Smsc(config) as smsc:
            conn.send({"port": smsc.port, "control_port": smsc.control_port})
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "drop":
                    drop_links = getattr(smsc, "drop_links", None)
                    if drop_links is not None:
                        conn.send(drop_links())
                        continue
                    # a simulator without drop_links(): drop_after only cuts transmitters
                    # at their next submit, so abort every connection here
                    links = [link for link in smsc._connections if not link.closed]
                    for link in links:
                        link.abort("soak fault: drop every link")
                    conn.send(len(links))
                elif command == "stats":
                    conn.send(smsc.stats)
                else:
                    conn.send(smsc.stats)
                    return

    import logging

    import structlog
    import uvloop

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    uvloop.run(serve())


class Simulator:
    """The simulator process and its command pipe."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(
            target=simulator_process, args=(config, child), daemon=True, name="soak-simulator"
        )
        self.process.start()
        if not self.pipe.poll(30):
            raise SystemExit("the simulator did not start within 30 s")
        ports = self.pipe.recv()
        self.port: int = ports["port"]
        self.control_port: int = ports["control_port"]

    def ask(self, command: str) -> Any:
        self.pipe.send(command)
        if not self.pipe.poll(30):
            raise RuntimeError(f"the simulator did not answer {command!r} within 30 s")
        return self.pipe.recv()

    def stop(self) -> dict[str, Any] | None:
        stats = None
        if self.process.is_alive():
            with contextlib.suppress(OSError, RuntimeError, EOFError):
                stats = self.ask("stop")
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        return stats


# --- the services -------------------------------------------------------------------------


def mid_settings(args: argparse.Namespace, port: int) -> dict[str, Any]:
    account = simulator_account(
        ACCOUNT,
        "soak",
        port,
        connections=args.connections,
        throughput={
            "window": args.window,
            "max_mt_per_second": 0,
            "mt_timeout": 10,
            "reconnect_delay": 1,
            "bind_timeout": 5,
        },
    )
    return mid_document(
        [account],
        host_id="soak",
        mta={
            "children": args.children,
            "metrics_port": None,
            "poll_interval": 0.5,
            "lease_ttl": 10,
            "shutdown_timeout": 10,
        },
        sms_process={"metrics_port": None, "poll_interval": 0.5, "shutdown_timeout": 10},
    )


@dataclass
class Service:
    """One `smsmta <service>` subprocess, restarted by the bench after a fault."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cli_command(*self.command),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: killed whole at the end
            )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait at most `timeout` s (then SIGKILL the group); the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        if process.poll() is None:
            self.kill()
            return -9
        return process.returncode

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def children(self) -> list[psutil.Process]:
        """The MTA's child processes, by index."""
        if not self.alive():
            return []
        try:
            found = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        return sorted(
            (c for c in found if _cmdline(c).count("mta.child")), key=lambda c: _cmdline(c)
        )

    def tail(self, chars: int = 1500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _cmdline(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())
    return ""


# --- measuring ----------------------------------------------------------------------------


def _rss(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    with contextlib.suppress(psutil.Error):
        return process.memory_info().rss / MIB
    return None


def _fds(process: psutil.Process | None) -> int | None:
    if process is None:
        return None
    with contextlib.suppress(psutil.Error):
        return process.num_fds()
    return None


def _process(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid)
    return None


def _postgres(pg_pid: int | None) -> tuple[float | None, int | None]:
    """PSS (MiB) and open fds summed over the PostgreSQL server's processes."""
    postmaster = _process(pg_pid)
    if postmaster is None:
        return None, None
    pss, fds = 0.0, 0
    processes = [postmaster]
    with contextlib.suppress(psutil.Error):
        processes += postmaster.children()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            pss += process.memory_full_info().pss / MIB
            fds += process.num_fds()
    return pss, fds


@dataclass
class Counts:
    statuses: dict[str, int]
    connections: dict[str, int]

    @property
    def final(self) -> int:
        return self.statuses.get("delivered", 0) + self.statuses.get("failed", 0)

    @property
    def queued(self) -> int:
        return self.statuses.get("pending", 0) + self.statuses.get("sending", 0)

    @property
    def sent(self) -> int:
        return self.statuses.get("sent", 0)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def _service_of(application_name: str) -> str:
    if application_name.startswith(("soak mta", "smsmta mta")):
        return "mta"
    if application_name.startswith(("soak sms", "smsmta sms-process")):
        return "sms"
    if application_name.startswith("soak bench"):
        return "bench"
    return "other"


async def counts(conn: psycopg.AsyncConnection) -> Counts:
    cursor = await conn.execute("SELECT status::text, count(*) FROM mid.broad_log GROUP BY 1")
    statuses = {status: n for status, n in await cursor.fetchall()}
    cursor = await conn.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend' GROUP BY 1"
    )
    connections = {"mta": 0, "sms": 0, "bench": 0, "other": 0}
    for name, n in await cursor.fetchall():
        connections[_service_of(name or "")] += n
    return Counts(statuses, connections)


# --- the soak -----------------------------------------------------------------------------


@dataclass
class Fault:
    at: float
    kind: str
    detail: str


@dataclass
class Soak:
    args: argparse.Namespace
    dsn: str
    simulator: Simulator
    mta: Service
    sms: Service
    pg_pid: int | None
    started: float = 0.0
    offered: int = 0
    feeding: bool = True
    faults: list[Fault] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mta_exit_codes: list[int | None] = field(default_factory=list)
    in_fault: bool = False
    fault_now: str = ""  # the fault under way, when a row is sampled during one

    def clock(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def say(self, text: str) -> None:
        print(f"[{self.clock()}] {text}", flush=True)

    # the offered load

    async def feed(self, conn: psycopg.AsyncConnection, account_id: int, delivery: int) -> None:
        """Enqueue `rate` messages a second, in small COPY batches, on a fixed schedule."""
        rate = self.args.rate
        while self.feeding:
            due = int(rate * (time.monotonic() - self.started))
            if due > self.offered:
                first, self.offered = self.offered, due
                await enqueue(
                    conn,
                    delivery,
                    account_id,
                    ((i, f"+336{i:08d}", f"Soak message {i}") for i in range(first, due)),
                )
            await asyncio.sleep(0.2)

    # the faults

    async def wait_binds(
        self, tx: int | None, rx: int | None, timeout: float = 60.0, below: bool = False
    ) -> float:
        """Seconds until the simulator sees at least these transmitter / receiver binds
        (`below`: fewer than these, on either side), or -1 past `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            active = (await asyncio.to_thread(self.simulator.ask, "stats"))["binds_active"]
            tx_ok = tx is None or active["tx"] >= tx
            rx_ok = rx is None or active["rx"] >= rx
            if (not (tx_ok and rx_ok)) if below else (tx_ok and rx_ok):
                return time.monotonic() - start
            await asyncio.sleep(0.1)
        return -1.0

    async def fault(self, number: int) -> None:
        args = self.args
        kind = FAULTS[number % len(FAULTS)]
        at = time.monotonic() - self.started
        self.fault_now = f"{kind} (under way)"
        all_tx, all_rx = args.children * args.connections, args.connections
        if kind == "kill-child":
            children = self.mta.children()
            if not children:
                detail = "no MTA child to kill"
            else:
                victim = children[(number // len(FAULTS)) % len(children)]
                victim.send_signal(signal.SIGKILL)
                await self.wait_binds(all_tx, None, timeout=10, below=True)
                back = await self.wait_binds(all_tx, None)
                detail = f"SIGKILL MTA child pid {victim.pid}; all binds back in {back:.1f} s"
        elif kind == "drop-links":
            dropped = await asyncio.to_thread(self.simulator.ask, "drop")
            back = await self.wait_binds(all_tx, all_rx)
            detail = f"simulator aborted {dropped} links; all binds back in {back:.1f} s"
        elif kind == "kill-sms":
            pid = self.sms.pid
            self.sms.kill()
            await self.wait_binds(None, all_rx, timeout=10, below=True)
            self.sms.start()
            back = await self.wait_binds(None, all_rx)
            detail = f"SIGKILL SMS process pid {pid}, restarted; receivers back in {back:.1f} s"
        else:
            pid = self.mta.pid
            began = time.monotonic()
            code = await self.mta.stop(timeout=60)
            took = time.monotonic() - began
            self.mta_exit_codes.append(code)
            await self.wait_binds(all_tx, None, timeout=10, below=True)
            self.mta.start()
            back = await self.wait_binds(all_tx, None)
            detail = (
                f"SIGTERM MTA supervisor pid {pid}: exit {code} after {took:.1f} s, "
                f"restarted; binds back in {back:.1f} s"
            )
            if code != 0:
                self.unexpected.append(f"MTA supervisor exited {code} on SIGTERM")
        self.faults.append(Fault(at, kind, detail))
        self.fault_now = ""
        minutes, seconds = divmod(int(at), 60)
        self.say(f"fault {number + 1} at {minutes:02d}:{seconds:02d} {kind}: {detail}")

    async def run_faults(self, duration: float) -> None:
        every = self.args.fault_every
        number = 0
        while every > 0 and (number + 1) * every < duration:
            due = self.started + (number + 1) * every
            while self.feeding and time.monotonic() < due:
                await asyncio.sleep(min(1.0, due - time.monotonic()))
            if not self.feeding:
                return  # the load is over; a fault under way was finished first
            self.in_fault = True
            try:
                await self.fault(number)
            finally:
                self.in_fault = False
            number += 1

    async def watch(self) -> None:
        """Restart a service that died outside a fault, and say so."""
        while True:
            await asyncio.sleep(1.0)
            if self.in_fault:
                continue  # the fault restarts what it stopped
            for service in (self.mta, self.sms):
                process = service.process
                if process is not None and process.poll() is not None:
                    code = process.returncode
                    note = f"{service.name} exited {code} outside a fault; restarted"
                    self.unexpected.append(note)
                    self.say(f"UNEXPECTED: {note}; log tail:\n{service.tail(800)}")
                    service.start()

    # the minute rows

    def sample_processes(self) -> dict[str, tuple[float | None, int | None]]:
        supervisor = _process(self.mta.pid) if self.mta.alive() else None
        found: dict[str, tuple[float | None, int | None]] = {
            "sup": (_rss(supervisor), _fds(supervisor))
        }
        children = self.mta.children()
        for index in range(self.args.children):
            child = next((c for c in children if _cmdline(c).endswith(f"--index {index}")), None)
            found[f"c{index}"] = (_rss(child), _fds(child))
        sms = _process(self.sms.pid) if self.sms.alive() else None
        found["sms"] = (_rss(sms), _fds(sms))
        simulator = _process(self.simulator.process.pid)
        found["sim"] = (_rss(simulator), _fds(simulator))
        found["pg"] = _postgres(self.pg_pid)
        return found

    async def sample(
        self, conn: psycopg.AsyncConnection, minute: int, last: dict[str, Any]
    ) -> dict:
        now = await counts(conn)
        stats = await asyncio.to_thread(self.simulator.ask, "stats")
        processes = await asyncio.to_thread(self.sample_processes)
        elapsed = time.monotonic() - last["at"]
        row = {
            "minute": minute,
            "at": time.monotonic(),
            "offered": self.offered - last["offered_total"],
            "offered_total": self.offered,
            "mt_per_s": (stats["accepted"] - last["accepted"]) / elapsed,
            "accepted": stats["accepted"],
            "final": now.final - last["final_total"],
            "final_total": now.final,
            "queue": now.queued,
            "sent": now.sent,
            "processes": processes,
            "connections": now.connections,
            "duplicates": stats["duplicates"],
            "fault": self.fault_now or (self.faults[-1].kind if self.faults else "-"),
        }
        self.rows.append(row)
        print(format_row(row, self.args.children), flush=True)
        return row


def header(children: int) -> str:
    names = ["sup", *(f"c{i}" for i in range(children)), "sms", "sim", "pg"]
    rss = " ".join(f"{n:>5}" for n in names)
    fds = " ".join(f"{n:>4}" for n in names)
    width = len(rss) + len(fds) + 3
    return "\n".join(
        [
            f"{'':>38} | {'RSS MiB / fds per process':^{width}} | PG connections",
            f"min offered  MT/s final/s  queue   sent | {rss} | {fds} | mta sms bench other"
            " |  dups | last fault",
        ]
    )


def format_row(row: dict[str, Any], children: int) -> str:
    processes = row["processes"]
    names = ["sup", *(f"c{i}" for i in range(children)), "sms", "sim", "pg"]

    def number(value: float | None, width: int) -> str:
        return f"{value:>{width}.0f}" if value is not None else f"{'-':>{width}}"

    rss = " ".join(number(processes[n][0], 5) for n in names)
    fds = " ".join(number(processes[n][1], 4) for n in names)
    c = row["connections"]
    return (
        f"{row['minute']:>3} {row['offered']:>7,} {row['mt_per_s']:>5.0f} "
        f"{row['final'] / 60:>7.0f} {row['queue']:>6,} {row['sent']:>6,} | {rss} | {fds} | "
        f"{c['mta']:>3} {c['sms']:>3} {c['bench']:>5} {c['other']:>5} | {row['duplicates']:>5} "
        f"| {row['fault']}"
    )


# --- the trend of each resource -----------------------------------------------------------


def slope(values: list[float]) -> float:
    """Least-squares slope per sample (per minute)."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    var = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / var if var else 0.0


def trends(rows: list[dict[str, Any]], children: int) -> tuple[list[str], list[str]]:
    """Printed lines and the resources flagged as growing steadily.

    A series grows steadily when its last quarter's mean exceeds its first quarter's by
    more than the noise allowance AND the least-squares slope of its second half (past
    the warm-up), over the second half's length, also exceeds that allowance: RSS
    max(8 MiB, 10%), fds max(4, 15%), connections 2.
    The simulator's RSS is printed but not judged: its message store keeps the last
    200,000 to 400,000 messages (query_sm), so it grows until that bound, and it
    remembers every message of the run so that `duplicates` is exact.
    """
    lines: list[str] = []
    growing: list[str] = []
    if len(rows) < 8:
        lines.append(f"  only {len(rows)} minute rows: too few to judge a trend (needs 8)")
    names = ["sup", *(f"c{i}" for i in range(children)), "sms", "sim", "pg"]
    series: list[tuple[str, list[float], float, float]] = []
    for name in names:
        values = [r["processes"][name][0] for r in rows]
        series.append((f"RSS {name} (MiB)", [v for v in values if v is not None], 8.0, 0.10))
        values = [r["processes"][name][1] for r in rows]
        series.append((f"fds {name}", [v for v in values if v is not None], 4.0, 0.15))
    for service in ("mta", "sms", "bench", "other"):
        series.append((f"PG conns {service}", [r["connections"][service] for r in rows], 2.0, 0.0))
    lines.append(
        f"  {'resource':<20} {'first q':>8} {'last q':>8} {'slope/min':>10} "
        f"{'2nd-half slope':>15}  verdict"
    )
    for label, values, absolute, share in series:
        if len(values) < 2:
            continue
        quarter = max(1, len(values) // 4)
        first = sum(values[:quarter]) / quarter
        last = sum(values[-quarter:]) / quarter
        whole = slope(values)
        half = slope(values[len(values) // 2 :]) if len(values) >= 4 else whole
        allowance = max(absolute, share * first)
        verdict = "flat"
        # growth still going on in the second half, past the warm-up, beyond the noise
        still_growing = half * (len(values) - len(values) // 2) > allowance
        if last - first > allowance and still_growing:
            verdict = "GROWS"
            if label.startswith("RSS sim"):
                verdict = "grows (by design: message store, bounded; duplicate check)"
            elif len(rows) >= 8:
                growing.append(label)
        elif last - first > allowance:
            verdict = "higher, levelled off"
        lines.append(
            f"  {label:<20} {first:>8.1f} {last:>8.1f} {whole:>+10.2f} {half:>+15.2f}  {verdict}"
        )
    return lines, growing


# --- main ---------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, url: str, workdir: Path) -> int:
    dsn = libpq_dsn(url)
    duration = args.minutes * 60.0
    sim_config = SimulatorConfig(
        port=0,
        control_port=0,
        seed=1,
        dlr_delay_ms=args.dlr_delay_ms,
        fail_rate=args.fail_rate,
        # remember every message of the run: `duplicates` is then exact
        duplicate_window=max(1_000_000, int(args.rate * duration * 1.2)),
        max_pending_deliveries=2_000_000,
    )
    simulator = Simulator(sim_config)
    settings_path = workdir / "mid.json"
    settings_path.write_text(json.dumps(mid_settings(args, simulator.port), indent=2))
    config = load(settings_path)
    assert isinstance(config, MidConfig)
    mta = Service(
        "mta",
        ["mta", "--config", str(settings_path)],
        service_env(url, PGAPPNAME="soak mta"),
        workdir / "mta.log",
    )
    sms = Service(
        "sms-process",
        ["sms-process", "--config", str(settings_path)],
        service_env(url, PGAPPNAME="soak sms-process"),
        workdir / "sms-process.log",
    )
    state: Soak | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="soak bench"
        ) as conn, await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="soak bench feeder"
        ) as feeder:  # fmt: skip
            account_id = (await sync_accounts(conn, config))[ACCOUNT]
            delivery = await create_delivery(conn, account_id, DeliverySpec("soak", "Soak"))
            pg_pid = postmaster_pid(dsn)
            print(conditions(args, simulator, dsn, pg_pid, workdir), flush=True)
            state = Soak(args, dsn, simulator, mta, sms, pg_pid)
            mta.start()
            sms.start()
            state.started = time.monotonic()
            back = await state.wait_binds(args.children * args.connections, args.connections)
            if back < 0:
                raise SystemExit(
                    f"the services did not bind within 60 s\nMTA:\n{mta.tail()}\n"
                    f"SMS process:\n{sms.tail()}"
                )
            state.started = time.monotonic()
            state.say(f"services bound; offering {args.rate:g} msg/s for {args.minutes} min")
            print(header(args.children), flush=True)
            tasks = [
                asyncio.create_task(state.feed(feeder, account_id, delivery)),
                asyncio.create_task(state.run_faults(duration)),
                asyncio.create_task(state.watch()),
            ]
            last: dict[str, Any] = {
                "at": state.started,
                "offered_total": 0,
                "accepted": 0,
                "final_total": 0,
            }
            for minute in range(1, args.minutes + 1):
                await asyncio.sleep(max(0.0, state.started + minute * 60 - time.monotonic()))
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                last = await state.sample(conn, minute, last)
            state.feeding = False
            await tasks[0]
            await tasks[1]  # a fault under way ends with its service back
            state.say(f"offered {state.offered:,} messages; draining (at most {args.drain} s)")
            drain_start = time.monotonic()
            while time.monotonic() - drain_start < args.drain:
                now = await counts(conn)
                if now.queued + now.sent == 0 and now.total >= state.offered:
                    break
                await asyncio.sleep(1.0)
            state.say(f"drain took {time.monotonic() - drain_start:.1f} s")
            tasks[2].cancel()
            return await totals(state, conn, delivery)
    finally:
        for task in tasks:
            task.cancel()
        codes = [await service.stop(timeout=40) for service in (mta, sms)]
        stats = simulator.stop()
        if state is not None:
            print(
                f"services stopped: MTA exit {codes[0]}, SMS process exit {codes[1]}; "
                f"simulator deliver_sm dropped {stats and stats['deliver_sm_dropped']}"
            )
        for service in (mta, sms):
            service.kill()


async def totals(state: Soak, conn: psycopg.AsyncConnection, delivery: int) -> int:
    args = state.args
    final = await counts(conn)
    stats = await asyncio.to_thread(state.simulator.ask, "stats")
    cursor = await conn.execute(
        "SELECT result::text, count(*) FROM mid.receipt GROUP BY 1 ORDER BY 1"
    )
    receipts = {result: n for result, n in await cursor.fetchall()}
    cursor = await conn.execute("SELECT count(*) FROM mid.broad_log WHERE possible_duplicate")
    flagged = (await cursor.fetchone())[0]
    missing = state.offered - final.total
    lost = final.sent + max(0, missing) + sum(
        n for s, n in final.statuses.items()
        if s not in ("pending", "sending", "sent", "delivered", "failed")
    )  # fmt: skip
    kinds = [f.kind for f in state.faults]
    per_bind = args.window
    bound = per_bind * (
        args.connections * kinds.count("kill-child")
        + args.connections * args.children * kinds.count("drop-links")
        + args.connections * args.children * kinds.count("restart-mta")
    )
    print()
    print("Totals")
    print(f"  messages offered      {state.offered:,} (rows in the queue table: {final.total:,})")
    print(
        f"  final                 {final.final:,} (delivered "
        f"{final.statuses.get('delivered', 0):,}, failed {final.statuses.get('failed', 0):,})"
    )
    print(f"  still queued          {final.queued:,} (pending + sending)")
    print(f"  lost                  {lost:,} (neither final nor queued: sent without receipt "
          f"{final.sent:,}, missing rows {max(0, missing):,})")  # fmt: skip
    print(
        f"  duplicates            {stats['duplicates']:,} at the simulator (MTs flagged "
        f"possible_duplicate: {flagged:,}); bound {bound:,} = window {args.window} x "
        f"(connections {args.connections} x {kinds.count('kill-child')} children killed + "
        f"connections x children {args.connections * args.children} x "
        f"({kinds.count('drop-links')} link drops + {kinds.count('restart-mta')} supervisor "
        f"restarts))"
    )
    print(
        f"  simulator             accepted {stats['accepted']:,}, receipts generated "
        f"{stats['receipts_generated']:,}, deliver_sm resent {stats['deliver_sm_resent']:,}, "
        f"dropped {stats['deliver_sm_dropped']:,}"
    )
    print(f"  receipts by result    {receipts}")
    if receipts.get("unmatched"):
        print(
            "                        (unmatched: receipts of an MT whose submit_sm_resp was lost "
            "in a fault, so its provider id\n                        was never recorded; the "
            "message went again and its second receipt applied)"
        )
    print(f"  faults                {len(state.faults)}:")
    for fault in state.faults:
        minutes, seconds = divmod(int(fault.at), 60)
        print(f"    {minutes:02d}:{seconds:02d} {fault.kind:<12} {fault.detail}")
    if state.unexpected:
        print("  UNEXPECTED            " + "; ".join(state.unexpected))
    print("Resource trend over the run (per-minute samples; processes restarted by faults")
    print("start again from scratch, so a leak shows within each lifetime too)")
    lines, growing = trends(state.rows, args.children)
    for line in lines:
        print(line)
    problems = []
    if lost:
        problems.append(f"{lost:,} messages lost")
    if stats["duplicates"] > bound:
        problems.append(f"duplicates {stats['duplicates']} over the bound {bound}")
    if growing:
        problems.append("steady growth: " + ", ".join(growing))
    if state.unexpected:
        problems.append("unexpected exits: " + "; ".join(state.unexpected))
    print()
    print("VERDICT: " + ("FAIL - " + "; ".join(problems) if problems else "PASS"))
    return 1 if problems else 0


def conditions(
    args: argparse.Namespace, simulator: Simulator, dsn: str, pg_pid: int | None, w: Path
) -> str:
    where = (
        "external PostgreSQL (--database-url / SMSMTA_DATABASE_URL)"
        if args.database_url
        else "embedded PostgreSQL (pgserver, default settings)"
    )
    where += f", postmaster pid {pg_pid}" if pg_pid else ", not on this machine"
    return describe_conditions(
        "Soak: queue -> smsmta mta -> simulator -> smsmta sms-process, with periodic faults",
        database=where,
        dsn=dsn,
        rows=[
            (
                "run",
                f"{args.minutes} min at {args.rate:g} msg/s offered "
                f"({int(args.rate * args.minutes * 60):,} messages), a fault every "
                f"{args.fault_every:g} s cycling {', '.join(FAULTS)}; drain at most "
                f"{args.drain} s",
            ),
            (
                "MTA",
                f"{args.children} children, {args.connections} transmitter binds "
                f"each, window {args.window}, mt_timeout 10 s, no rate cap",
            ),
            ("SMS process", f"{args.connections} receiver binds, defaults otherwise"),
            (
                "simulator",
                f"own process, receipts after {args.dlr_delay_ms:g} ms, "
                f"{args.fail_rate:.0%} failures, port {simulator.port}, control endpoint "
                f"http://127.0.0.1:{simulator.control_port}/stats",
            ),
            ("files", f"{w} (settings, service logs)"),
            (
                "columns",
                "offered = messages enqueued in the minute; MT/s = submits accepted by "
                "the simulator;\n              final/s = messages reaching delivered/failed; "
                "queue = pending + sending; sent = awaiting receipt;\n              RSS MiB "
                "and fds per process (pg: PSS and fds summed over PostgreSQL's processes); PG "
                "conns\n              = client connections by application_name; dups = "
                "cumulative duplicates at the simulator",
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30, help="minutes of load (>= 1)")
    parser.add_argument("--rate", type=float, default=300.0, help="messages offered per second")
    parser.add_argument(
        "--fault-every", type=float, default=120.0, help="seconds between faults (0: none)"
    )
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2, help="binds per child")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--dlr-delay-ms", type=float, default=100.0)
    parser.add_argument("--fail-rate", type=float, default=0.03)
    parser.add_argument("--drain", type=int, default=300, help="most seconds to drain at the end")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),  # named here: the conditions say which
        help="a PostgreSQL server where a database may be created (default: embedded)",
    )
    args = parser.parse_args()
    for name, low in (("minutes", 1), ("children", 1), ("connections", 1), ("window", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be at least {low}, got {getattr(args, name)}")
    if args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate:g}")
    if args.fault_every < 0:
        parser.error(f"--fault-every must be 0 or more, got {args.fault_every:g}")
    if not 0 <= args.fail_rate <= 1:
        parser.error(f"--fail-rate must be within 0..1, got {args.fail_rate:g}")
    workdir = Path(tempfile.mkdtemp(prefix="smsmta-soak-", dir="/tmp"))
    code = 1
    try:
        with (
            server(args.database_url, "smsmta-soak-pg-") as (server_url, _),
            scratch_database(server_url, "smsmta_soak") as url,
        ):
            migrate.upgrade(url, "mid")
            code = asyncio.run(soak(args, url.render_as_string(hide_password=False), workdir))
    except KeyboardInterrupt:
        print("interrupted")
    shutil.rmtree(workdir / "pgdata", ignore_errors=True)
    if code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"service logs kept in {workdir}")
    sys.exit(code)


if __name__ == "__main__":
    main()
