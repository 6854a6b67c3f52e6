"""Receipts reconciled per second by the real `smsmta sms-process`, and their delay.

What runs, all on this machine: a PostgreSQL (SMSMTA_DATABASE_URL's server, else an
embedded one), the SMSC simulator and a transmitter in this process, and the SMS process
as a subprocess exactly as an operator runs it. The MTs are recorded beforehand the way
the MTA records them (broad_log `sent`, provider_msg_id with the simulator's decimal
ids 1..N, one transaction); then the transmitter submits N submit_sm asking for a
receipt, the simulator sends a receipt for each on the SMS process's receiver binds, and
the SMS process stores, acknowledges and reconciles them.

`--submit before` (the default): the transmitter submits the N MTs before the SMS process
binds, so the simulator holds N receipts and sends them as the receivers' windows allow:
what is measured is the target's set-up (SMS process, PostgreSQL and simulator on this
machine), not the transmitter, which stands for the MTA (elsewhere, or idle once a
delivery is sent). `--submit during`: the transmitter submits while the receipts flow, in
the simulator's process: the same machine also runs the MTA's share of the work.

While the receipts flow the bench waits on the delivery's real-time KPI counters (one
row), not on a count over broad_log, so its own polling costs PostgreSQL next to nothing;
the CPU that each party used over the run is printed with the figures (psutil).

Figures (from the database, so nothing is sampled):
- receipts reconciled per second: N / (last broad_log update - first receipt arrival);
- receipt-to-update delay p50 / p99: broad_log.final_at - receipt.received_at, the
  receipt's arrival in the SMS process to the start of the transaction that updated its
  message (the commit follows within that batch's write time).

Usage: .venv/bin/python bench/receipts.py [--count 50000] [--fail-rate 0.2]
       [--submit before|during] [--connections 2] [--batch 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smsmta.accounts import sync_accounts  # noqa: E402
from smsmta.db import migrate  # noqa: E402
from smsmta.db.engine import libpq_dsn  # noqa: E402
from smsmta.queue.enqueue import DeliverySpec, create_delivery  # noqa: E402
from smsmta.settings import MidConfig  # noqa: E402
from smsmta.simulator import SimulatorConfig, Smsc  # noqa: E402
from smsmta.smpp.aio import BaseHandler, BindKind, BindSettings, SmppClient  # noqa: E402
from smsmta.smpp.pdu import SubmitSm  # noqa: E402
from smsmta.testing.conditions import machine, postmaster_pid, python_version  # noqa: E402
from smsmta.testing.settings import mid_document, simulator_account  # noqa: E402
from smsmta.testing.stack import cli_command, scratch_database, server, service_env  # noqa: E402


def settings(port: int, connections: int, batch: int) -> dict:
    account = simulator_account(
        "bench_sms",
        "bench",
        port,
        connections=connections,
        throughput={"window": 100, "reconnect_delay": 0.5},
    )
    return mid_document(
        [account],
        host_id=None,
        sms_process={"metrics_port": None, "batch_size": batch, "poll_interval": 0.2},
    )


async def record_mts(dsn: str, config: MidConfig, count: int) -> int:
    """broad_log rows `sent` and their provider ids 1..count, as the MTA writes them."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        account_id = (await sync_accounts(conn, config))["bench_sms"]
        delivery_id = await create_delivery(conn, account_id, DeliverySpec("bench"))
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO mid.broad_log (id, delivery_id, account_id, address, text, status, "
                "parts, sent_at) SELECT g, %s, %s, '+3361' || lpad(g::text, 7, '0'), 'Hello', "
                "'sent', 1, now() FROM generate_series(1, %s) AS g",
                (delivery_id, account_id, count),
            )
            await conn.execute(
                "INSERT INTO mid.provider_msg_id (account_id, provider_id, broad_log_id, "
                "delivery_id, part_no) SELECT %s, g::text, g, %s, 1 "
                "FROM generate_series(1, %s) AS g",
                (account_id, delivery_id, count),
            )
            await conn.execute(
                "UPDATE mid.delivery SET to_send = %s, sent = %s WHERE id = %s",
                (count, count, delivery_id),
            )
        await conn.execute("ANALYZE mid.broad_log")
        await conn.execute("ANALYZE mid.provider_msg_id")
        return delivery_id


class CpuMeter:
    """CPU seconds used by this process, the SMS process, PostgreSQL and the rest."""

    def __init__(self, sms_pid: int, pg_pid: int | None) -> None:
        self.parties = {"bench (simulator + transmitter)": [psutil.Process()]}
        self.parties["SMS process"] = [psutil.Process(sms_pid)]
        if pg_pid is not None:
            postmaster = psutil.Process(pg_pid)
            self.parties["PostgreSQL"] = [postmaster, *postmaster.children()]
        self.start = self._sample()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            return times.user + times.system
        return 0.0

    def _sample(self) -> tuple[float, float, dict[str, float]]:
        total = psutil.cpu_times()
        busy = total.user + total.system + total.nice + getattr(total, "irq", 0.0)
        busy += getattr(total, "softirq", 0.0) + getattr(total, "steal", 0.0)
        used = {name: sum(map(self._cpu, procs)) for name, procs in self.parties.items()}
        return time.monotonic(), busy, used

    def report(self) -> str:
        """Share of one core each party used since the meter started."""
        (t0, busy0, used0), (t1, busy1, used1) = self.start, self._sample()
        elapsed = t1 - t0
        shares = {name: (used1[name] - used0[name]) / elapsed for name in used0}
        others = max((busy1 - busy0) / elapsed - sum(shares.values()), 0.0)
        parts = [f"{name} {share:.0%}" for name, share in shares.items()]
        return ", ".join([*parts, f"other processes {others:.0%}"]) + " of one core"


class Counter(BaseHandler):
    def __init__(self) -> None:
        self.answered = 0

    def on_response(self, conn, response) -> None:  # type: ignore[no-untyped-def]
        self.answered += 1


async def submit(port: int, count: int) -> None:
    handler = Counter()
    client = SmppClient(
        BindSettings("127.0.0.1", port, "smsmta", "secret", BindKind.TRANSMITTER, window=200),
        handler,
    )
    task = asyncio.create_task(client.run())
    pdu = SubmitSm(
        source_addr="38000",
        destination_addr="33610000000",
        registered_delivery=1,
        short_message=b"Hello",
    )
    sent = 0
    while sent < count:  # fill the window each time it has room: the cheapest client
        conn = await client.wait_ready()
        for _ in range(min(conn.window_free, count - sent)):
            conn.submit(pdu)
            sent += 1
    while handler.answered < count:
        await asyncio.sleep(0.05)
    await client.stop(5)
    task.cancel()


async def bench(
    url: str, count: int, fail_rate: float, connections: int, batch: int, submit_mode: str
) -> None:
    dsn = libpq_dsn(url)
    async with Smsc(SimulatorConfig(port=0, seed=1, fail_rate=fail_rate)) as smsc:
        workdir = Path(tempfile.mkdtemp(prefix="bench-receipts-"))
        path = workdir / "mid.json"
        path.write_text(json.dumps(settings(smsc.port, connections, batch)))
        config = MidConfig.model_validate(json.loads(path.read_text()))
        delivery_id = await record_mts(dsn, config, count)
        if submit_mode == "before":  # the simulator holds the receipts until the binds
            await submit(smsc.port, count)
        log = (workdir / "sms-process.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            *cli_command("sms-process", "--config", str(path)),
            env=service_env(url),
            stdout=log,
            stderr=log,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                pg_pid = postmaster_pid(dsn)
                while smsc.stats["binds_active"]["rx"] < (
                    1 if submit_mode == "before" else connections
                ):
                    if process.returncode is not None:
                        raise SystemExit((workdir / "sms-process.log").read_text()[-3000:])
                    await asyncio.sleep(0.01)
                started = time.monotonic()
                cpu = CpuMeter(process.pid, pg_pid)
                submitter = None
                if submit_mode == "during":
                    submitter = asyncio.create_task(submit(smsc.port, count))
                while True:  # the KPI counters move in the transactions that reconcile
                    cursor = await conn.execute(
                        "SELECT delivered + failed_hard + failed_soft FROM mid.delivery "
                        "WHERE id = %s",
                        (delivery_id,),
                    )
                    if (await cursor.fetchone())[0] >= count:
                        break
                    if time.monotonic() - started > 600:
                        raise SystemExit("timed out waiting for the receipts")
                    await asyncio.sleep(0.05)
                cpu_used = cpu.report()
                cursor = await conn.execute(
                    "SELECT count(*) FROM mid.broad_log WHERE status = 'sent'"
                )
                left = (await cursor.fetchone())[0]
                if left:
                    raise SystemExit(f"{left} messages still `sent`: receipts lost")
                if submitter is not None:
                    await submitter
                cursor = await conn.execute(
                    "SELECT extract(epoch FROM max(b.final_at) - min(r.received_at)), "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                    "b.final_at - r.received_at)), percentile_cont(0.99) WITHIN GROUP "
                    "(ORDER BY extract(epoch FROM b.final_at - r.received_at)), "
                    "count(*) FILTER (WHERE b.status = 'failed') "
                    "FROM mid.receipt r JOIN mid.broad_log b ON b.id = r.broad_log_id "
                    "WHERE r.result = 'applied'"
                )
                span, p50, p99, failed = await cursor.fetchone()
                cursor = await conn.execute("SHOW server_version")
                pg_version = (await cursor.fetchone())[0]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 60)
    submitted = {
        "before": "the N MTs submitted before the SMS process bound (receipts held by the "
        "simulator)",
        "during": "the N MTs submitted while the receipts flow (transmitter in the "
        "simulator's process)",
    }[submit_mode]
    print(f"receipts reconciled per second: {count / span:,.0f}")
    print(f"receipt-to-update delay: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(
        f"conditions: {count:,} receipts ({failed:,} failures, fail_rate {fail_rate}), "
        f"{connections} receiver bind(s), batch_size {batch}; --submit {submit_mode}: "
        f"{submitted}; SMS process in another process, PostgreSQL {pg_version}, all on "
        "this machine"
    )
    print(f"CPU while the receipts flowed: {cpu_used}")
    print(f"machine: {machine()}; Python {python_version()}, uvloop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument(
        "--submit",
        choices=("before", "during"),
        default="before",
        help="submit the MTs before the SMS process binds (default) or while receipts flow",
    )
    parser.add_argument(
        "--database-url", help="a PostgreSQL server to create databases on (default: "
        "SMSMTA_DATABASE_URL, else an embedded PostgreSQL)",
    )  # fmt: skip
    args = parser.parse_args()
    with (
        server(args.database_url, "bench-receipts-pg-") as (server_url, _),
        scratch_database(server_url, "bench_receipts") as url,
    ):
        migrate.upgrade(url, "mid")
        import uvloop

        uvloop.run(
            bench(
                url.render_as_string(hide_password=False),
                args.count,
                args.fail_rate,
                args.connections,
                args.batch,
                args.submit,
            )
        )


if __name__ == "__main__":
    main()
