"""Benchmark: scale-out, one host vs two hosts against one PostgreSQL and one account.

A "host" is what one machine of the mid side runs: `smsmta mid` (its own port) and `smsmta
mta` (its own children), both reading that host's settings file with its own `host_id`.
Every run has one PostgreSQL (a fresh database), one `smsmta sms-process`, one simulator
in its own process (it stamps arrivals, samples the transmitter binds every 5 ms and
refuses binds past the contract), and one account. Each host's mid server gets one
delivery of N/hosts messages over HTTP, pushed at the same time as the other host's; the
deliveries are pushed paused and resumed once every host's binds are up, so that sending
is measured from a standing start with every host ready. Prints:

1. throughput, uncapped account: N messages with 1 host, then with 2 hosts: the push
   rate through the mid server(s), the sending rate (first to last arrival at the SMSC);
2. the contract across both hosts, capped account with max_binds below what the hosts
   want: the most submits that arrived in any sliding second vs the cap, the most
   transmitter binds at once vs what max_binds leaves them (max_binds counts every bind of
   the login: the SMS process's `connections` receivers hold their share first), binds
   refused by the SMSC;
3. for every run: exactly once (accepted == N, duplicates, distinct provider ids), the
   share each host took, and the conditions (cores, load average, settings).

Usage: .venv/bin/python bench/scaleout.py [--messages 30000] [--children 1]
       [--connections 2] [--window 100] [--cap 1000] [--cap-seconds 10] [--max-binds 5]
       [--database-url URL]
PostgreSQL: SMSMTA_DATABASE_URL (a server where databases may be created), else an
embedded one started for the benchmark and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
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

import httpx
import psutil
import psycopg
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from midsourcing import auth  # noqa: E402
from midsourcing.client import MidClient  # noqa: E402
from midsourcing.schemas import DeliveryCreate, Message  # noqa: E402
from smsmta.db import migrate  # noqa: E402
from smsmta.db.engine import libpq_dsn  # noqa: E402
from smsmta.settings import MarketingAccount  # noqa: E402
from smsmta.simulator import SimulatorConfig, Smsc  # noqa: E402
from smsmta.testing.conditions import describe_conditions  # noqa: E402
from smsmta.testing.figures import max_in_any_second  # noqa: E402
from smsmta.testing.settings import mid_document, simulator_account  # noqa: E402
from smsmta.testing.stack import (  # noqa: E402
    cli_command,
    free_port,
    scratch_database,
    server,
    service_env,
)

PASSWORD = "scale-out bench password"
CHUNK = 5_000
RUN_LIMIT = 600.0  # seconds: a run that takes longer is stopped and reported


# --- the simulator, in its own process ----------------------------------------------------


def simulator_process(port: int, control_port: int, max_binds: int, ready: Any, conn: Any) -> None:
    """The SMSC: arrival times, peak transmitter binds; sends them back when told to stop."""

    async def serve() -> None:
        times: list[float] = []
        config = SimulatorConfig(
            port=port,
            control_port=control_port,
            seed=1,
            max_binds=max_binds,
            max_pending_deliveries=2_000_000,
        )
        async with Smsc(config) as smsc:
            smsc.on_submit = lambda pdu, now, status: times.append(now)
            peak = 0

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, smsc.stats["binds_active"]["tx"])
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            sampler.cancel()
            conn.send(
                {
                    "times": times,
                    "accepted": smsc.counters.accepted,
                    "duplicates": smsc.counters.duplicates,
                    "binds_refused": smsc.counters.binds_refused,
                    "peak_tx_binds": peak,
                }
            )

    import gc
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # The simulator stands in for an SMSC on its own machine: its clock must read arrivals,
    # not the scheduling delays of the hosts and PostgreSQL sharing these cores.
    with contextlib.suppress(PermissionError):
        os.nice(-10)
    gc.freeze()
    uvloop.run(serve())


# --- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    hosts: int
    count: int
    cap: float
    max_binds: int
    push_seconds: float = 0.0
    send_seconds: float = 0.0
    accepted: int = 0
    duplicates: int = 0
    provider_ids: int = 0
    binds_refused: int = 0
    peak_tx_binds: int = 0
    worst_second: int = 0
    by_host: dict[str, int] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)
    exits: list[int] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)
    times: list[float] = field(default_factory=list)


def host_config(
    args: argparse.Namespace,
    host_id: str,
    ports: tuple[int, int, int],
    cap: float,
    binds: int,
) -> dict[str, Any]:
    """One host's settings: its own host_id and mid port, the one shared account."""
    smpp_port, mid_port, metrics_port = ports
    account = simulator_account(
        "bench_sms",
        "bench",
        smpp_port,
        connections=args.connections,
        throughput={
            "window": args.window,
            "max_mt_per_second": cap,
            "max_binds": binds,
            "mt_timeout": 30,
            "reconnect_delay": 1,
        },
    )
    return mid_document(
        [account],
        host_id=host_id,
        mid={"listen": "127.0.0.1", "port": mid_port, "metrics_port": None},
        mta={
            "children": args.children,
            "metrics_port": metrics_port,
            "poll_interval": 0.2,
            "claim_batch": 2000,
            "lease_ttl": 5,
        },
        sms_process={"metrics_port": None, "poll_interval": 0.2},
    )


def mid_client(url: str) -> MidClient:
    account = MarketingAccount(
        name="sms", mid_url=url, operator="bench", password=PASSWORD, timeout=120
    )
    return MidClient(account)


async def push(url: str, name: str, first: int, count: int) -> int:
    """One paused delivery of `count` messages through one mid server, chunk after chunk."""
    async with mid_client(url) as client:
        delivery = await client.create_delivery(
            DeliveryCreate(marketing_account="sms", marketing_delivery_id=name)
        )
        await client.action(delivery.id, "pause")
        for start in range(first, first + count, CHUNK):
            chunk = [
                Message(id=i + 1, to=f"+3361{i:07d}", text=f"Scale-out benchmark message {i}")
                for i in range(start, min(start + CHUNK, first + count))
            ]
            await client.push(delivery.id, chunk)
        await client.complete(delivery.id, count)
        return delivery.id


async def wait_for(condition: Any, timeout: float, what: str, processes: dict[str, Any]) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        for name, process in processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.2)


async def drive(
    args: argparse.Namespace,
    dsn: str,
    env: dict[str, str],
    folder: Path,
    run: Run,
    smpp_port: int,
    control_port: int,
) -> None:
    """Start the services, push, send, stop: fills `run` (but the simulator's figures)."""
    names = ["host-a", "host-b"][: run.hosts]
    ports = [free_port() for _ in names]
    metrics = [free_port() for _ in names]
    paths = []
    for name, port, metrics_port in zip(names, ports, metrics, strict=True):
        path = folder / f"{name}.yaml"
        config = host_config(args, name, (smpp_port, port, metrics_port), run.cap, run.max_binds)
        path.write_text(json.dumps(config, indent=2))
        paths.append(path)
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(label: str, command: str, path: Path) -> None:
        with (folder / f"{label}.log").open("wb") as log:
            processes[label] = subprocess.Popen(
                cli_command(command, "--config", str(path)),
                env={**env, "PGAPPNAME": label},  # libpq names each service's connections
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    try:
        await asyncio.to_thread(
            auth.add_operator, dsn, "bench", "Benchmark", PASSWORD, ["ADMINISTRATION"]
        )
        start("sms-process", "sms-process", paths[0])
        for name, path in zip(names, paths, strict=True):
            start(f"mid {name}", "mid", path)
            start(f"mta {name}", "mta", path)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with httpx.AsyncClient(timeout=5) as http:

            async def healthy() -> bool:
                for url in urls:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{url}/healthz")).status_code == 200:
                            continue
                    return False
                return True

            await wait_for(healthy, 60, "the mid servers answering", processes)
            share = run.count // run.hosts
            began = time.monotonic()
            deliveries = await asyncio.gather(
                *(
                    push(
                        url,
                        f"bench-{n}",
                        n * share,
                        share if n < run.hosts - 1 else run.count - share * n,
                    )
                    for n, url in enumerate(urls)
                )
            )
            run.push_seconds = time.monotonic() - began
            wanted = run.hosts * args.children * args.connections
            # the receivers (one per connection) hold their slots first (smsmta.binds)
            left = run.max_binds - args.connections
            binds = min(wanted, left) if run.max_binds else wanted

            async def bound() -> bool:
                stats = (await http.get(f"http://127.0.0.1:{control_port}/stats")).json()
                return stats["binds_active"]["tx"] == binds and stats["binds_active"]["rx"] > 0

            await wait_for(bound, 60, f"{binds} transmitter binds up", processes)
        with psycopg.connect(dsn, autocommit=True, application_name="bench") as conn:
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend' "
                "AND application_name <> 'bench' GROUP BY 1"
            ).fetchall()
        for name, count in rows:  # the SMS process names its connections itself
            key = "sms-process" if name.startswith("smsmta sms-process") else name
            run.connections[key] = run.connections.get(key, 0) + count
        with psycopg.connect(dsn, autocommit=True) as conn:
            async with mid_client(urls[-1]) as client:  # any mid server sees every delivery
                for delivery_id in deliveries:
                    await client.action(delivery_id, "resume")
            started = time.monotonic()
            while True:
                [(done,)] = conn.execute(
                    "SELECT count(*) FROM mid.broad_log WHERE status IN ('sent', 'delivered')"
                ).fetchall()
                if done >= run.count:
                    break
                for name, process in processes.items():
                    if process.poll() is not None:
                        raise SystemExit(f"{name} exited ({process.returncode}) while sending")
                if time.monotonic() - started > RUN_LIMIT:
                    raise SystemExit(f"sending took over {RUN_LIMIT:g} s; stopping")
                await asyncio.sleep(0.25)
            [(run.provider_ids,)] = conn.execute(
                "SELECT count(DISTINCT provider_id) FROM mid.provider_msg_id"
            ).fetchall()
        async with httpx.AsyncClient(timeout=10) as http:  # each host's own MTA metrics
            for name, metrics_port in zip(names, metrics, strict=True):
                text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                run.by_host[name] = int(metric_sum(text, "smsmta_mt_parts_submitted_total"))
        run.load = (run.load[0], psutil.getloadavg()[0])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 90
        for label, process in processes.items():
            try:
                run.exits.append(process.wait(max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                print(f"   {label} did not stop within 90 s of SIGTERM: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                run.exits.append(process.wait())


def one_run(args: argparse.Namespace, server_url: Any, run: Run) -> Run:
    with scratch_database(server_url, "smsmta_bench") as url:
        return run_on(args, url, run)


def run_on(args: argparse.Namespace, url: Any, run: Run) -> Run:
    dsn = libpq_dsn(url)
    folder = Path(tempfile.mkdtemp(prefix="smsmta-scaleout-"))
    simulator = None
    try:
        migrate.upgrade(url, "mid")
        smpp_port, control_port = free_port(), free_port()
        ready = multiprocessing.Event()
        parent, child = multiprocessing.Pipe()
        # the SMSC refuses any bind past the contract: max_binds counts every bind of the login
        guard = run.max_binds
        simulator = multiprocessing.Process(
            target=simulator_process,
            args=(smpp_port, control_port, guard, ready, child),
            daemon=True,
        )
        simulator.start()
        if not ready.wait(30):
            raise SystemExit("the simulator did not start within 30 s")
        env = service_env(url.render_as_string(hide_password=False))
        run.load = (psutil.getloadavg()[0], 0.0)
        try:
            asyncio.run(drive(args, dsn, env, folder, run, smpp_port, control_port))
        finally:
            parent.send("stop")
            result = parent.recv() if parent.poll(30) else {}
        times = sorted(result.get("times", []))
        run.times = times
        run.accepted = result.get("accepted", 0)
        run.duplicates = result.get("duplicates", 0)
        run.binds_refused = result.get("binds_refused", 0)
        run.peak_tx_binds = result.get("peak_tx_binds", 0)
        run.send_seconds = times[-1] - times[0] if len(times) > 1 else 0.0
        run.worst_second = max_in_any_second(times)
        shutil.rmtree(folder, ignore_errors=True)  # the services' logs, kept when a run fails
        return run
    except BaseException:
        print(f"   logs of the failed run: {folder}")
        raise
    finally:
        if simulator is not None:
            simulator.join(10)
            if simulator.is_alive():
                simulator.kill()


def metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def report(run: Run, args: argparse.Namespace) -> None:
    label = f"{run.hosts} host{'s' if run.hosts > 1 else ''}"
    print(
        f"{label}: {run.count:,} messages, {run.hosts * args.children} MTA "
        f"child{'ren' if run.hosts * args.children > 1 else ''}, "
        f"load {run.load[0]:.2f} at start, {run.load[1]:.2f} at end"
    )
    print(
        f"   push through {run.hosts} mid server{'s' if run.hosts > 1 else ''}: "
        f"{run.push_seconds:.1f} s = {run.count / run.push_seconds:,.0f} messages/s"
    )
    rate = (run.accepted - 1) / run.send_seconds if run.send_seconds else 0.0
    print(
        f"   sending: {run.send_seconds:.1f} s first to last arrival = {rate:,.0f} MT/s; "
        f"most in any sliding second {run.worst_second:,}"
    )
    once = run.accepted == run.count and run.duplicates == 0 and run.provider_ids == run.count
    print(
        f"   exactly once: {'yes' if once else 'NO'} (accepted {run.accepted:,}, duplicates "
        f"{run.duplicates}, distinct provider ids {run.provider_ids:,}); exit codes {run.exits}"
    )
    shares = ", ".join(f"{h} {n:,}" for h, n in sorted(run.by_host.items()))
    print(f"   submit_sm sent by each host (its MTA's metrics): {shares}")
    print(
        "   database connections once bound (pg_stat_activity): "
        + ", ".join(f"{name} {n}" for name, n in sorted(run.connections.items()))
        + f"; total {sum(run.connections.values())}"
    )
    print(
        f"   transmitter binds at once, at most: {run.peak_tx_binds}"
        + (
            f" (max_binds {run.max_binds}); binds refused {run.binds_refused}"
            if run.max_binds
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000, help="per throughput run")
    parser.add_argument("--children", type=int, default=1, help="MTA children per host")
    parser.add_argument("--connections", type=int, default=2, help="binds per child")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--cap", type=float, default=1000.0, help="MT/s of the capped run")
    parser.add_argument("--cap-seconds", type=float, default=10.0, help="length of the capped run")
    parser.add_argument(
        "--max-binds", type=int, default=5, help="of the capped run, receivers included"
    )
    parser.add_argument(
        "--database-url", help="a PostgreSQL server to create databases on (default: "
        "SMSMTA_DATABASE_URL, else an embedded PostgreSQL)",
    )  # fmt: skip
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures as they come
    for name in ("messages", "children", "connections", "window", "max_binds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cap <= 0 or args.cap_seconds <= 0:
        parser.error("--cap and --cap-seconds must be positive")
    with server(args.database_url) as (server_url, where):
        print(
            describe_conditions(
                "Scale-out benchmark: hosts (smsmta mid + smsmta mta) on one PostgreSQL, one "
                "account",
                database=f"{where}; every process on this one machine",
                dsn=libpq_dsn(server_url),
                rows=[
                    (
                        "each host",
                        f"smsmta mid + smsmta mta with {args.children} child(ren) x "
                        f"{args.connections} binds, window {args.window}",
                    ),
                    (
                        "shared",
                        "one smsmta sms-process (receivers, receipts reconciled), one "
                        "simulator in its own process at nice -10, answering at once, a "
                        "receipt for every MT",
                    ),
                    ("push", f"one delivery a host, {CHUNK:,}-message chunks, paused until bound"),
                ],
            )
        )
        print()
        print(f"1. throughput, uncapped account, {args.messages:,} messages a run")
        runs = [one_run(args, server_url, Run(hosts, args.messages, 0.0, 0)) for hosts in (1, 2)]
        for run in runs:
            report(run, args)
        one, two = ((r.accepted - 1) / r.send_seconds if r.send_seconds else 0 for r in runs)
        if one:
            print(f"   two hosts vs one: {two / one:.2f}x the sending rate")
        print()
        count = int(args.cap * args.cap_seconds)
        wanted = 2 * args.children * args.connections
        print(
            f"2. the contract across two hosts: cap {args.cap:g} MT/s, max_binds {args.max_binds} "
            f"(the hosts want {wanted}), {count:,} messages"
        )
        run = one_run(args, server_url, Run(2, count, args.cap, args.max_binds))
        report(run, args)
        over = max(0, run.worst_second - int(args.cap))
        print(
            f"   cap held: {'yes' if over == 0 else 'NO'}: most in any sliding second "
            f"{run.worst_second} = {run.worst_second / args.cap:.1%} of the cap (over: {over})"
        )
        held = run.peak_tx_binds <= args.max_binds and run.binds_refused == 0
        print(
            f"   max_binds held: {'yes' if held else 'NO'}: at most {run.peak_tx_binds} "
            f"transmitter binds at once (sampled every 5 ms), {run.binds_refused} refused"
        )
        times = run.times
        steady = [t for t in times if t >= times[0] + 2.0] if times else []
        if len(steady) > 1:
            rate = (len(steady) - 1) / (steady[-1] - steady[0])
            print(
                f"   steady rate (from 2 s on): {rate:,.0f} MT/s = {rate / args.cap:.1%} of the cap"
            )


if __name__ == "__main__":
    main()
