"""Benchmark: housekeeping at volume, the purge and the hot queries at 10 million messages.

1. Loads `--rows` messages into `mid.broad_log` (default 10,000,000) with generate_series
   in SQL (secondary indexes dropped during the load and rebuilt after, as a restore
   would), plus `mid.provider_msg_id`, `mid.receipt` and `mid.inbox` rows in proportion,
   then ANALYZE. The messages: 1% pending (the queue), 2% sent (waiting for a receipt), the
   rest final over the last 89 days, and `--purge-rows` final messages 91 to 191 days old
   (past the 90-day retention); every delivery is pushed through the mid API and its
   statuses pulled, except the second half of the oldest delivery's (kept by the purge).
2. Prints EXPLAIN (ANALYZE, BUFFERS) and the execution time of: the MTA's queue claim
   (smsmta.queue.claims.CLAIM), the SMS process's receipt lookup
   (smsmta.queue.receipts.MATCH, 2,000 ids), the mid API's status pull (midsourcing.store:
   one page of changes and the delivery's counters), and the first batch of every purge statement
   (smsmta.queue.purge.PURGE_*). Statements that write run in a transaction rolled back.
3. Runs the real `smsmta mta` against the simulator (own process, counting submits) with a
   feeder keeping its queue full, and prints MT/s: without a purge; during purges of the
   old messages in equal bands, one for each pause between statements of `--pauses`;
   during the purge of the other tables at their default retentions; and without a purge
   again; with each purge's rows/s and statement latencies (p50, p99, max).

Usage: .venv/bin/python bench/housekeeping.py [--rows 10000000] [--purge-rows N]
       [--database-url postgresql://user@host/db] [--baseline-seconds 15] [--children 2]
       [--pauses 0,0.05,0.25] [--skip-mta]
Without --database-url (or SMSMTA_DATABASE_URL), an embedded PostgreSQL 16 is started for
the benchmark and stopped at the end; a database is created and dropped either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from midsourcing.store import _CHANGES, _COUNTERS  # noqa: E402
from smsmta.accounts import sync_accounts  # noqa: E402
from smsmta.db import migrate  # noqa: E402
from smsmta.db.engine import libpq_dsn  # noqa: E402
from smsmta.queue.claims import CLAIM  # noqa: E402
from smsmta.queue.enqueue import DeliverySpec, create_delivery, enqueue  # noqa: E402
from smsmta.queue.purge import (  # noqa: E402
    PURGE_BROAD_LOG,
    PURGE_INBOX,
    PURGE_PROVIDER_MSG_ID,
    PURGE_RECEIPT,
    purge,
)
from smsmta.queue.receipts import MATCH  # noqa: E402
from smsmta.settings import SmsProcessService  # noqa: E402
from smsmta.settings import load as load_settings  # noqa: E402
from smsmta.testing.conditions import describe_conditions  # noqa: E402
from smsmta.testing.settings import mid_document, simulator_account, write_document  # noqa: E402
from smsmta.testing.stack import scratch_database, server, spawn  # noqa: E402

DAY = 86400.0
TABLES = ("broad_log", "provider_msg_id", "receipt", "inbox")
BENCH_ACCOUNT = "bench_sms"

# --- the simulator, in its own process --------------------------------------------------


def simulator_process(port: int, submits: Any, ready: Any, stop: Any) -> None:
    """The SMSC simulator; `submits` (shared) counts the submit_sm that arrived."""
    import logging

    import structlog
    import uvloop

    from smsmta.simulator import SimulatorConfig, Smsc

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with contextlib.suppress(PermissionError):
        os.nice(-10)

    def count(pdu: Any, now: float, status: Any) -> None:
        submits.value += 1

    async def serve() -> None:
        config = SimulatorConfig(port=port, seed=1, max_pending_deliveries=100_000)
        async with Smsc(config) as smsc:
            smsc.on_submit = count
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    uvloop.run(serve())


# --- loading ----------------------------------------------------------------------------

SECONDARY_INDEXES = """
SELECT t.relname, ic.relname, pg_get_indexdef(i.indexrelid), c.conname,
       pg_get_constraintdef(c.oid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = t.oid
WHERE n.nspname = 'mid' AND t.relname = ANY(%s) AND NOT i.indisprimary
ORDER BY t.relname, ic.relname
"""

# status_xid grows with the id (1 + id / 100000), as statuses are changed over time
LOAD_BROAD_LOG = """
INSERT INTO mid.broad_log (id, delivery_id, account_id, marketing_message_id, address, text,
    status, parts, failure_type, next_try_at, created_at, sent_at, final_at, status_xid)
SELECT i, %(first_delivery)s + (i - 1) / %(per_delivery)s, %(account)s, i,
       '+3361' || lpad((i %% 10000000)::text, 7, '0'), 'Benchmark message ' || i,
       s.status::mid.message_status, 1,
       CASE WHEN s.status = 'failed' THEN 'hard'::mid.failure_type END,
       t.at, t.at - interval '1 hour',
       CASE WHEN s.status <> 'pending' THEN t.at - interval '50 minutes' END,
       CASE WHEN s.status IN ('delivered', 'failed') THEN t.at END,
       CASE WHEN s.status <> 'pending' THEN 1 + i / 100000 ELSE 0 END
FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS i
CROSS JOIN LATERAL (SELECT (i * 7919) %% 1000 AS r) h
CROSS JOIN LATERAL (SELECT CASE
    WHEN i <= %(old)s THEN CASE WHEN h.r < 150 THEN 'failed' ELSE 'delivered' END
    WHEN h.r < 10 THEN 'pending'
    WHEN h.r < 30 THEN 'sent'
    WHEN h.r < 180 THEN 'failed'
    ELSE 'delivered' END AS status) s
CROSS JOIN LATERAL (SELECT CASE
    WHEN i <= %(old)s
        THEN now() - interval '91 days' - (%(old)s - i) * (interval '100 days' / %(old)s)
    WHEN s.status = 'pending' THEN now() - (h.r * interval '1 second')
    ELSE now() - (%(rows)s - i) * (interval '89 days' / %(rows)s) END AS at) t
"""

LOAD_PROVIDER_MSG_ID = """
INSERT INTO mid.provider_msg_id (id, account_id, provider_id, broad_log_id, delivery_id,
    part_no, created_at)
SELECT j, %(account)s, upper(to_hex(j * 2654435761 %% 4294967291)) || '-' || j,
       %(rows)s - %(n)s + j, 0, 1,
       now() - (%(n)s - j) * (interval '8 days' / %(n)s)
FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS j
"""

LOAD_RECEIPT = """
INSERT INTO mid.receipt (id, account_id, provider_id, broad_log_id, part_no, stat, err,
    outcome, result, text, received_at, processed_at)
SELECT j, %(account)s, 'P' || j, j, 1, 'DELIVRD', '000', 'delivered',
       CASE WHEN j %% 100 = 0 THEN 'unmatched' ELSE 'applied' END::mid.receipt_result,
       'id:P' || j || ' sub:001 dlvrd:001 stat:DELIVRD err:000 Text:Hello',
       p.at, p.at
FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS j
CROSS JOIN LATERAL (SELECT now() - (%(n)s - j) * (interval '35 days' / %(n)s) AS at) p
"""

# 10% stuck for 8 days (tried, held MO parts), the rest fresh receipts waiting for their MT
LOAD_INBOX = """
INSERT INTO mid.inbox (id, account_id, kind, pdu, received_at, next_try_at, attempts, held)
SELECT j, %(account)s, CASE WHEN j %% 10 = 0 THEN 'mo' ELSE 'receipt' END::mid.inbox_kind,
       '\\x000000100000000500000000'::bytea || int4send(j::int), p.at, p.at + interval '5 s',
       CASE WHEN j %% 10 = 0 THEN 0 ELSE 1 + j %% 5 END, j %% 10 = 0 AND j <= %(stuck)s
FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS j
CROSS JOIN LATERAL (SELECT CASE WHEN j <= %(stuck)s THEN now() - interval '8 days'
                                ELSE now() - (j %% 600) * interval '1 second' END AS at) p
"""

SYNC_DELIVERIES = """
INSERT INTO mid.delivery_sync (delivery_id, pushed_total, push_completed_at, pulled_xid,
    pulled_id, pulled_at)
SELECT d.id, 0, now(),
       CASE WHEN d.id = %(unpulled)s THEN 1 + %(half)s / 100000 ELSE 9223372036854775806 END,
       CASE WHEN d.id = %(unpulled)s THEN %(half)s ELSE 0 END, now()
FROM mid.delivery d WHERE d.account_id = %(account)s
"""


def chunks(total: int, size: int = 1_000_000) -> list[tuple[int, int]]:
    return [(low, min(low + size - 1, total)) for low in range(1, total + 1, size)]


def load(dsn: str, args: argparse.Namespace, account: int) -> dict[str, Any]:
    rows, old = args.rows, args.purge_rows
    deliveries = max(10, rows // 100_000)
    per_delivery = -(-rows // deliveries)
    timings: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SET session_replication_role = replica")  # no FK checks (superuser)
        conn.execute("SET maintenance_work_mem = '512MB'")
        first = conn.execute(
            "INSERT INTO mid.delivery (account_id, marketing_delivery_id, state) "
            "SELECT %s, 'bulk-' || n, 'running' FROM generate_series(1, %s) AS n RETURNING id",
            (account, deliveries),
        ).fetchall()
        first_delivery = min(r[0] for r in first)
        unpulled = first_delivery  # the oldest delivery: half of its statuses not pulled
        # the oldest delivery's marketing side pulled the first half of its statuses only
        conn.execute(
            SYNC_DELIVERIES,
            {"unpulled": unpulled, "account": account, "half": per_delivery // 2},
        )
        indexes = conn.execute(SECONDARY_INDEXES, (list(TABLES),)).fetchall()
        for table, name, _definition, constraint, _ in indexes:
            if constraint:
                conn.execute(f"ALTER TABLE mid.{table} DROP CONSTRAINT {constraint}")
            else:
                conn.execute(f"DROP INDEX mid.{name}")
        params = {
            "account": account,
            "first_delivery": first_delivery,
            "per_delivery": per_delivery,
            "old": old,
            "rows": rows,
        }
        n_provider, n_receipt, n_inbox = args.rows // 2, args.rows // 10, args.rows // 10
        steps = [
            ("broad_log", LOAD_BROAD_LOG, rows, params),
            ("provider_msg_id", LOAD_PROVIDER_MSG_ID, n_provider, {**params, "n": n_provider}),
            ("receipt", LOAD_RECEIPT, n_receipt, {**params, "n": n_receipt}),
            ("inbox", LOAD_INBOX, n_inbox, {**params, "stuck": n_inbox // 10}),
        ]
        for table, query, total, values in steps:
            started = time.monotonic()
            for low, high in chunks(total):
                conn.execute(query, {**values, "low": low, "high": high})
            timings[table] = time.monotonic() - started
            print(f"   loaded {total:>11,} {table:<16} in {timings[table]:6.1f} s", flush=True)
        for table in TABLES:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('mid.{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM mid.{table}))"
            )
        started = time.monotonic()
        for table, _name, definition, constraint, constraint_def in indexes:
            if constraint:
                conn.execute(
                    f"ALTER TABLE mid.{table} ADD CONSTRAINT {constraint} {constraint_def}"
                )
            else:
                conn.execute(definition)
        timings["indexes"] = time.monotonic() - started
        print(
            f"   rebuilt {len(indexes)} secondary indexes in {timings['indexes']:.1f} s",
            flush=True,
        )
        started = time.monotonic()
        conn.execute("VACUUM (ANALYZE) mid.broad_log, mid.provider_msg_id, mid.receipt, mid.inbox")
        timings["vacuum_analyze"] = time.monotonic() - started
        sizes = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'mid' AND c.relname = ANY(%s) ORDER BY 1",
            (list(TABLES),),
        ).fetchall()
    return {
        "deliveries": deliveries,
        "first_delivery": first_delivery,
        "unpulled": unpulled,
        "per_delivery": per_delivery,
        "timings": timings,
        "sizes": sizes,
        "provider_rows": n_provider,
    }


# --- query plans ------------------------------------------------------------------------


SUMMARY: list[tuple[str, float]] = []


def explain(conn: psycopg.Connection, title: str, query: str, params: Any) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) in a transaction rolled back; print the plan."""
    print(f"\n--- {title}")
    with conn.transaction(force_rollback=True):
        plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params)]
    for line in plan:
        print("   " + line)
    seq = [line.strip() for line in plan if "Seq Scan" in line]
    big = [s for s in seq if re.search(r"on (broad_log|provider_msg_id|receipt|inbox)\b", s)]
    if big:
        print(f"   !! sequential scan of a big table: {big}")
    timing = next((line for line in plan if line.startswith("Execution Time")), "")
    match = re.search(r"([0-9.]+) ms", timing)
    SUMMARY.append((title.split(" (")[0], float(match.group(1)) if match else -1))


def plans(dsn: str, loaded: dict[str, Any], account: int, args: argparse.Namespace) -> None:
    print("\nQuery plans (EXPLAIN ANALYZE, BUFFERS; writes rolled back):")
    with psycopg.connect(dsn, autocommit=True) as conn:
        explain(
            conn,
            "queue claim (smsmta.queue.claims.CLAIM), 1,000 rows of an account with 1% "
            "of the table pending",
            CLAIM,
            {
                "account_id": account,
                "owner": "bench:0:0",
                "limit": 1000,
                "default_source": "",
                "short_code": "",
            },
        )
        n = loaded["provider_rows"]
        picks = range(1, n + 1, max(1, n // 2000))[:2000]
        ids = [f"{(j * 2654435761 % 4294967291):X}-{j}" for j in picks]
        explain(
            conn,
            f"receipt lookup (smsmta.queue.receipts.MATCH), {len(ids):,} provider ids",
            MATCH.replace("%b", "%s"),
            ([account] * len(ids), ids),
        )
        delivery = loaded["first_delivery"] + loaded["deliveries"] - 2  # a recent one
        row = conn.execute(
            "SELECT status_xid, id FROM mid.broad_log WHERE delivery_id = %s AND status_xid > 0 "
            "ORDER BY status_xid, id OFFSET 1000 LIMIT 1",
            (delivery,),
        ).fetchone()
        xid, row_id = row if row else (0, 0)
        explain(
            conn,
            "status pull page (midsourcing.store._CHANGES), 5,000 changes after a cursor",
            _CHANGES,
            {"delivery": delivery, "xid": xid, "id": row_id, "limit": 5001},
        )
        explain(
            conn,
            f"status pull counters (midsourcing.store._COUNTERS), one delivery of "
            f"{loaded['per_delivery']:,} messages",
            _COUNTERS,
            (delivery,),
        )
        batch = args.batch
        explain(
            conn,
            f"purge provider_msg_id, one batch of {batch:,}",
            PURGE_PROVIDER_MSG_ID,
            {"retention": 7 * DAY, "batch": batch},
        )
        explain(
            conn,
            f"purge receipt history, one batch of {batch:,}",
            PURGE_RECEIPT,
            {"retention": 30 * DAY, "batch": batch},
        )
        explain(
            conn,
            f"purge broad_log, first batch of {batch:,} (keyset on ix_broad_log_final; "
            "half the oldest delivery not pulled yet: scanned, kept)",
            PURGE_BROAD_LOG,
            {"retention": 90 * DAY, "batch": batch, "after_at": "-infinity", "after_id": 0},
        )
        explain(
            conn,
            f"purge inbox, first batch of {batch:,} (primary key order)",
            PURGE_INBOX,
            {"retention": 7 * DAY, "batch": batch, "after_id": 0},
        )
    print("\nExecution times (EXPLAIN ANALYZE):")
    for title, ms in SUMMARY:
        print(f"   {title:<52} {ms:9.1f} ms")


# --- the MTA during a purge -------------------------------------------------------------


def write_config(folder: Path, port: int, args: argparse.Namespace) -> Path:
    account = simulator_account(
        BENCH_ACCOUNT,
        "bench",
        port,
        mode=None,
        throughput={"window": 100, "mt_timeout": 30, "reconnect_delay": 1},
    )
    mta = {
        "children": args.children,
        "metrics_port": None,
        "poll_interval": 0.2,
        "claim_batch": 2000,
    }
    return write_document(folder / "mid.yaml", mid_document([account], mta=mta))


class Feeder(threading.Thread):
    """Keeps the bench account's queue between `low` and `low + chunk` pending messages."""

    def __init__(self, dsn: str, account: int, delivery: int, low: int, chunk: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.account, self.delivery = dsn, account, delivery
        self.low, self.chunk = low, chunk
        self.stop = threading.Event()
        self.enqueued = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # reported by the main thread
            self.error = error

    async def _run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                cursor = await conn.execute(
                    "SELECT count(*) FROM mid.broad_log WHERE account_id = %s "
                    "AND status = 'pending'",
                    (self.account,),
                )
                pending = (await cursor.fetchone())[0]
                if pending < self.low:
                    base = self.enqueued
                    self.enqueued += await enqueue(
                        conn,
                        self.delivery,
                        self.account,
                        (
                            (base + i, f"+3362{(base + i) % 10_000_000:07d}", "Bench purge, hi!")
                            for i in range(self.chunk)
                        ),
                    )
                else:
                    await asyncio.sleep(0.1)


def window_rate(submits: Any, seconds: float) -> tuple[float, int]:
    first, started = submits.value, time.monotonic()
    time.sleep(seconds)
    count = submits.value - first
    return count / (time.monotonic() - started), count


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def purge_during(dsn: str, submits: Any, settings: SmsProcessService) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {}

    def observe(table: str, deleted: int, seconds: float) -> None:
        latencies.setdefault(table, []).append(seconds)

    async def go() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await purge(conn, settings, observe)

    first, started = submits.value, time.monotonic()
    load_before = psutil.getloadavg()[0]
    counts = asyncio.run(go())
    seconds = time.monotonic() - started
    return {
        "counts": counts,
        "seconds": seconds,
        "rate": (submits.value - first) / seconds,
        "latencies": latencies,
        "load": (load_before, psutil.getloadavg()[0]),
    }


def print_purge(label: str, result: dict[str, Any], baseline: float) -> None:
    counts = result["counts"]
    total = sum(counts[t] for t in TABLES)
    print(
        f"{label}: {result['rate']:,.0f} MT/s ({result['rate'] / baseline:.0%} of the "
        f"baseline) over the purge's {result['seconds']:.1f} s; load {result['load'][0]:.2f} "
        f"-> {result['load'][1]:.2f}"
    )
    print(
        f"   purged {total:,} rows = {total / result['seconds']:,.0f} rows/s: "
        + ", ".join(f"{t} {counts[t]:,}" for t in TABLES)
        + f"; kept unpulled {counts['broad_log_unpulled']:,}, "
        f"unmatched receipts purged {counts['receipt_unmatched']:,}"
    )
    for table, values in result["latencies"].items():
        print(
            f"   {table:<16} {len(values):>5} statements: p50 {percentile(values, 0.5) * 1000:6.1f}"
            f" ms, p99 {percentile(values, 0.99) * 1000:7.1f} ms, "
            f"max {max(values) * 1000:7.1f} ms"
        )


def mta_runs(dsn: str, url: Any, args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="smsmta-housekeeping-"))
    port = 27950
    submits = multiprocessing.Value("q", 0, lock=False)
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    simulator = multiprocessing.Process(
        target=simulator_process, args=(port, submits, ready, stop), daemon=True
    )
    simulator.start()
    mta: subprocess.Popen[bytes] | None = None
    feeder: Feeder | None = None
    try:
        if not ready.wait(30):
            raise SystemExit("the simulator did not start within 30 s")
        config_path = write_config(folder, port, args)
        config = load_settings(config_path)

        async def prepare() -> tuple[int, int]:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                account = (await sync_accounts(conn, config))[BENCH_ACCOUNT]
                return account, await create_delivery(conn, account, DeliverySpec("purge-bench"))

        account, delivery = asyncio.run(prepare())
        feeder = Feeder(dsn, account, delivery, low=40_000, chunk=20_000)
        feeder.start()
        mta = spawn(
            "mta", "--config", str(config_path),
            url=url.render_as_string(hide_password=False),
            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while submits.value < 10_000:
            if time.monotonic() > deadline or mta.poll() is not None:
                raise SystemExit("the MTA did not start sending within 60 s")
            time.sleep(0.2)
        time.sleep(3)  # warm-up: binds up, windows full
        print(
            f"\nMTA during the purge ({args.children} children, window 100, 2 binds each, "
            "queue kept at 40,000-60,000 pending by a feeder; MT/s counted at the simulator):"
        )
        baseline, count = window_rate(submits, args.baseline_seconds)
        print(f"no purge: {baseline:,.0f} MT/s ({count:,} MT in {args.baseline_seconds:g} s)")
        # the old final messages are 91 to 191 days old: one band of them a pause setting,
        # the other tables out of the way (10 years) so that the bands compare
        defaults = SmsProcessService()
        far = {
            "provider_msg_id_retention": 3650 * DAY,
            "receipt_retention": 3650 * DAY,
            "inbox_retention": 3650 * DAY,
            "broad_log_retention": 3650 * DAY,
        }
        bands = len(args.pauses)
        for index, pause in enumerate(args.pauses):
            days = 191 - 100 * (index + 1) / bands
            settings = defaults.model_copy(
                update={**far, "purge_pause": pause, "broad_log_retention": days * DAY}
            )
            result = purge_during(dsn, submits, settings)
            print_purge(
                f"purge of broad_log down to {days:.0f} days, pause {pause:g} s between "
                f"statements of {settings.purge_batch:,}",
                result,
                baseline,
            )
        result = purge_during(dsn, submits, defaults)
        print_purge(
            f"purge of the other tables at their default retentions, default pause "
            f"{defaults.purge_pause:g} s",
            result,
            baseline,
        )
        after, count = window_rate(submits, args.baseline_seconds)
        print(f"no purge, after: {after:,.0f} MT/s ({count:,} MT in {args.baseline_seconds:g} s)")
        if feeder.error is not None:
            print(f"   feeder failed: {feeder.error!r}")
    finally:
        if feeder is not None:
            feeder.stop.set()
            feeder.join(30)
        if mta is not None:
            mta.send_signal(signal.SIGTERM)
            try:
                _, stderr = mta.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                mta.kill()
                _, stderr = mta.communicate()
            errors = [
                line for line in stderr.decode(errors="replace").splitlines() if '"error"' in line
            ]
            print(f"   MTA exit {mta.returncode}; {len(errors)} error lines")
            for line in errors[:3]:
                print(f"   error: {line[:200]}")
        stop.set()
        simulator.join(10)
        if simulator.is_alive():
            simulator.terminate()


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="broad_log messages")
    parser.add_argument(
        "--purge-rows",
        type=int,
        default=None,
        help="final messages past the 90-day retention (default: 20%% of --rows)",
    )
    parser.add_argument("--batch", type=int, default=10_000, help="purge batch in the plans")
    parser.add_argument(
        "--database-url", default=None, help="a server where databases may be created"
    )
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument(
        "--pauses",
        type=lambda text: [float(p) for p in text.split(",")],
        default=[0.0, 0.05, 0.25],
        help="purge pauses to compare, one band of the old messages each (default 0,0.05,0.25)",
    )
    parser.add_argument("--skip-mta", action="store_true", help="load and plans only")
    args = parser.parse_args()
    if args.rows < 100_000:
        parser.error("--rows: at least 100000 (the load makes deliveries of 100,000 messages)")
    if args.purge_rows is None:
        args.purge_rows = args.rows // 5
    if not 0 < args.purge_rows < args.rows // 2:
        parser.error("--purge-rows: more than 0 and less than half of --rows")
    started = time.monotonic()
    with (
        server(args.database_url) as (server_url, where),
        scratch_database(server_url, "smsmta_housekeeping") as url,
    ):
        dsn = libpq_dsn(url)
        with psycopg.connect(dsn, autocommit=True) as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                    "('shared_buffers', 'work_mem', 'max_wal_size', 'autovacuum')"
                ).fetchall()
            )
        print(
            describe_conditions(
                "Housekeeping benchmark: 10M-row purge, index plans, MTA during a purge",
                database=f"{where}, same machine; {settings}",
                dsn=dsn,
                rows=[
                    (
                        "rows",
                        f"broad_log {args.rows:,} ({args.purge_rows:,} past the 90-day "
                        f"retention), provider_msg_id {args.rows // 2:,}, receipt "
                        f"{args.rows // 10:,}, inbox {args.rows // 10:,}",
                    )
                ],
            )
        )
        migrate.upgrade(url, "mid")
        bulk = load_bulk_account(dsn)
        print("\nLoading (generate_series, secondary indexes rebuilt after):", flush=True)
        loaded = load(dsn, args, bulk)
        for table, size, tuples in loaded["sizes"]:
            print(f"   {table:<16} {tuples:>12,} rows {size / 2**30:7.2f} GiB with indexes")
        plans(dsn, loaded, bulk, args)
        if not args.skip_mta:
            mta_runs(dsn, url, args)
    print(f"\ntotal {time.monotonic() - started:.0f} s, load {psutil.getloadavg()[0]:.2f} at end")


def load_bulk_account(dsn: str) -> int:
    """The account of the loaded messages: not in the MTA's settings, so never sent."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "INSERT INTO mid.external_account (internal_name, operator_login, marketing_account) "
            "VALUES ('bulk_sms', 'bulk', 'sms') RETURNING id"
        ).fetchone()[0]


if __name__ == "__main__":
    main()
