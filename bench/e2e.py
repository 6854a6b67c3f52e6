"""End to end: N messages from the marketing push to every receipt back in the marketing KPIs.

What runs, every service in its own process as in production, all on this machine: a
PostgreSQL (SMSMTA_DATABASE_URL's server, else an embedded PostgreSQL 16 with its default
durability: fsync and synchronous_commit on), the SMSC simulator (`smsmta smsc-sim`,
receipts after `--dlr-delay-ms`, `--fail-rate` of them failures), the mid server (`smsmta
mid`), the MTA (`smsmta mta`, its children), the SMS process (`smsmta sms-process`) and the
marketing service (`smsmta marketing`, its push and pull loops).

For each size N (a fresh database each): the services are started and bound, then N
recipients and a delivery of N messages in state `pushing` are generated in the marketing
schema by one SQL statement set (generate_series, timed and printed apart: the CSV import
is not what is measured; `smsmta delivery create` does that part). From that commit on,
the marketing service pushes the delivery to the mid server, the MTA sends it to the
simulator, the SMS process reconciles the receipts, and the marketing service pulls the
statuses back until the delivery is `done`.

Figures (from the database timestamps unless said otherwise):
- push rate: N / (marketing.delivery.pushed_at - the commit of the generated delivery);
- MT/s sustained: N / (last - first broad_log.sent_at);
- receipts reconciled per second: N / (last - first broad_log.final_at);
- push to last KPI update: marketing.delivery.updated_at (when it became `done`) - that
  commit;
- end-to-end rate: N / that time;
- latencies p50 / p99: push-to-submit = broad_log.sent_at - created_at (queued by the mid
  server -> the transaction that recorded the submit_sm_resp), submit-to-final =
  final_at - sent_at (-> the transaction that applied the receipt);
- peak RSS of each process (psutil, sampled every `--sample` seconds): each service, each
  MTA child, the simulator, PostgreSQL's backends summed (shared buffers counted once per
  backend that touched them, so an upper bound), their PSS summed (shared pages split
  between the processes that map them: the memory PostgreSQL really holds) and the
  largest backend;
- table and index sizes at the end (pg_total_relation_size, pg_indexes_size).

A run not done within 120 s + `--timeout-per-message` x N prints the figures so far
(rates over the messages submitted / final by then) and fails its check.

Checked at the end (exit 1 when one fails): the delivery `done` in the marketing KPIs,
delivered + failed = N, nothing left to send or sent, the failure share within a binomial
tolerance of `--fail-rate`, the simulator accepted N submits and counted 0 duplicates.

Usage: .venv/bin/python bench/e2e.py [--messages 100000,1000000] [--children 2]
       [--connections 2] [--window 100] [--dlr-delay-ms 100] [--fail-rate 0.05]
       [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smsmta.db import migrate  # noqa: E402
from smsmta.db.engine import libpq_dsn  # noqa: E402
from smsmta.testing import conditions  # noqa: E402
from smsmta.testing.settings import (  # noqa: E402
    marketing_document,
    mid_document,
    simulator_account,
    write_document,
)
from smsmta.testing.stack import Service, Stack, free_port, scratch_database, server  # noqa: E402

TEXT = "Bonjour, votre code promo expire ce soir !"
OPERATOR = "bench"


def wait_until(stack: Stack, what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stack.check()
        with contextlib.suppress(OSError, httpx.HTTPError):
            if probe():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout:g} s")
        time.sleep(0.1)


def settings(ports: dict[str, int], args: argparse.Namespace, password: str) -> tuple[dict, dict]:
    account = simulator_account(
        f"{OPERATOR}_sms",
        OPERATOR,
        ports["smsc"],
        connections=args.connections,
        smsc_name="Simulator",
        throughput={"window": args.window, "max_mt_per_second": 0, "reconnect_delay": 1},
        label="The SMSC simulator",
        channel={"short_code": "38000"},
    )
    mid = mid_document(
        [account],
        mid={"listen": "127.0.0.1", "port": ports["mid"], "metrics_port": None},
        mta={"children": args.children, "metrics_port": None, "poll_interval": 0.2},
        sms_process={"metrics_port": None, "poll_interval": 0.2},
    )
    marketing = marketing_document(
        ports["mid"],
        OPERATOR,
        password,
        {"name": "bench", "label": "Bench", "max_parts": 3},
        timeout=120,
        metrics_port=None,
        pull_interval=args.pull_interval,
        push_interval=0.2,
        push_chunk_size=args.push_chunk,
        pull_page_size=args.pull_page,
    )
    return mid, marketing


# --- sampling ----------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Peak RSS and CPU seconds of every party, sampled every `period` seconds."""

    def __init__(
        self, services: list[Service], postmaster: int | None, period: float, dsn: str
    ) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.postmaster = postmaster
        self.period = period
        self.dsn = dsn
        self.clients: dict[int, str] = {}  # PostgreSQL backend pid -> the service it serves
        self.peak: dict[str, int] = {}
        self.cpu: dict[str, float] = {}  # last seen, per pid, summed per party at the end
        self._cpu_by_pid: dict[tuple[str, int], float] = {}
        self._cpu_start: dict[tuple[str, int], float] = {}
        self.stopping = threading.Event()

    def _parties(self) -> list[tuple[str, list[psutil.Process]]]:
        parties: list[tuple[str, list[psutil.Process]]] = []
        for service in self.services:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(service.process.pid)
                if service.name == "mta":
                    parties.append(("mta supervisor", [process]))
                    for i, child in enumerate(sorted(process.children(), key=lambda p: p.pid)):
                        parties.append((f"mta child {i + 1}", [child]))
                else:
                    parties.append((service.name, [process, *process.children(recursive=True)]))
        if self.postmaster is not None:
            with contextlib.suppress(psutil.Error):
                master = psutil.Process(self.postmaster)
                parties.append(("postgresql (sum)", [master, *master.children()]))
        return parties

    def _backend_clients(self) -> None:
        """Which service each PostgreSQL backend serves (by application_name)."""
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.dsn, autocommit=True, application_name="bench bench") as c,
        ):
            for pid, app in c.execute(
                "SELECT pid, application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            ).fetchall():
                if app.startswith("bench "):
                    self.clients[pid] = app.removeprefix("bench ")
                elif app.startswith("smsmta sms-process"):
                    self.clients[pid] = "sms-process"
                elif app:
                    self.clients.setdefault(pid, app)

    def sample(self) -> None:
        if self.postmaster is not None:
            self._backend_clients()
        for name, processes in self._parties():
            rss, pss = [], []
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    rss.append(process.memory_info().rss)
                    if name.startswith("postgresql"):  # shared buffers: count them once
                        pss.append(process.memory_full_info().pss)
                    times = process.cpu_times()
                    key = (name, process.pid)
                    used = times.user + times.system
                    self._cpu_start.setdefault(key, used)
                    self._cpu_by_pid[key] = used
            total = sum(rss)
            self.peak[name] = max(self.peak.get(name, 0), total)
            if name == "postgresql (sum)" and rss:
                largest = "postgresql (largest)"
                self.peak[largest] = max(self.peak.get(largest, 0), max(rss))
                proportional = "postgresql (PSS sum)"
                self.peak[proportional] = max(self.peak.get(proportional, 0), sum(pss))

    def run(self) -> None:
        while not self.stopping.wait(self.period):
            self.sample()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per party; PostgreSQL's also split by the service each backend serves."""
        used: dict[str, float] = {}
        for (name, pid), value in self._cpu_by_pid.items():
            spent = value - self._cpu_start[(name, pid)]
            used[name] = used.get(name, 0.0) + spent
            if name.startswith("postgresql"):
                client = f"postgresql for {self.clients.get(pid, '(server processes)')}"
                used[client] = used.get(client, 0.0) + spent
        return used


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every process)."""
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


# --- one run -----------------------------------------------------------------------------

GENERATE = [
    "INSERT INTO marketing.recipient (mobile, first_name, last_name) "
    "SELECT '+3361' || lpad(g::text, 7, '0'), 'Guest' || g, 'Bench' "
    "FROM generate_series(1, %(n)s) AS g",
    "INSERT INTO marketing.delivery (template_id, label, text, state, total, rejected, to_send) "
    "SELECT id, 'bench e2e', %(text)s, 'pushing', %(n)s, 0, %(n)s "
    "FROM marketing.delivery_template WHERE internal_name = 'bench' RETURNING id",
    "INSERT INTO marketing.delivery_message (delivery_id, recipient_id, address, text) "
    "SELECT %(delivery)s, r.id, r.mobile, %(text)s || ' ' || r.first_name "
    "FROM marketing.recipient r ORDER BY r.id",
]

FIGURES = """
SELECT count(*),
       count(sent_at),
       count(final_at),
       extract(epoch FROM max(sent_at) - min(sent_at)),
       extract(epoch FROM max(final_at) - min(final_at)),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
           (ORDER BY extract(epoch FROM sent_at - created_at)),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
           (ORDER BY extract(epoch FROM final_at - sent_at)),
       count(*) FILTER (WHERE possible_duplicate)
FROM mid.broad_log
"""
SIZES = """
SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname IN ('mid', 'marketing')
ORDER BY 2 DESC
"""


def one_run(url: str, count: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The whole stack for one delivery of `count` messages; its figures."""
    dsn = libpq_dsn(url)
    stack = Stack(folder, url, cwd=ROOT, app_prefix="bench")
    ports = {name: free_port() for name in ("smsc", "control", "mid")}
    password = secrets.token_urlsafe(16)
    mid, marketing = settings(ports, args, password)
    mid_path = write_document(folder / "mid.yaml", mid, private=True)
    marketing_path = write_document(folder / "marketing.yaml", marketing, private=True)
    control = f"http://127.0.0.1:{ports['control']}/stats"
    result: dict[str, Any] = {"messages": count}
    sampler: Sampler | None = None
    try:
        stack.start(
            "simulator", "smsc-sim", "--port", str(ports["smsc"]),
            "--control-port", str(ports["control"]),
            "--dlr-delay-ms", str(args.dlr_delay_ms), "--fail-rate", str(args.fail_rate),
            "--seed", "1",
            # no query_sm here: a small store keeps the simulator's memory bounded
            # (~1 KB a message); the duplicate check still remembers every message
            "--message-store-size", "20000", "--duplicate-window", str(max(count, 1000)),
        )  # fmt: skip
        wait_until(stack, "simulator", lambda: httpx.get(control).status_code == 200, 30)
        added = stack.run(
            "operator", "add", OPERATOR, "--label", "Bench operator", "--password-stdin",
            "--config", str(mid_path), stdin=password + "\n", timeout=120,
        )  # fmt: skip
        if added.returncode != 0:
            raise RuntimeError(f"smsmta operator add failed: {added.stderr[-2000:]}")
        stack.start("mid", "mid", "--config", str(mid_path))
        health = f"http://127.0.0.1:{ports['mid']}/healthz"
        wait_until(stack, "mid server", lambda: httpx.get(health).status_code == 200, 60)
        stack.start("mta", "mta", "--config", str(mid_path))
        stack.start("sms-process", "sms-process", "--config", str(mid_path))
        stack.start("marketing", "marketing", "--config", str(marketing_path))

        def bound() -> bool:
            binds = httpx.get(control).json()["binds_active"]
            return binds["tx"] >= args.children * args.connections and binds["rx"] >= 1

        wait_until(stack, "MTA and SMS process binds", bound, 60)
        with psycopg.connect(dsn, autocommit=True, application_name="bench bench") as conn:
            wait_until(
                stack,
                "marketing templates",
                lambda: conn.execute("SELECT count(*) FROM marketing.delivery_template").fetchone()[
                    0
                ],  # type: ignore[index]
                60,
            )
            pg_pid = conditions.postmaster_pid(dsn)
            sampler = Sampler(stack.services, pg_pid, args.sample, dsn)
            sampler.sample()
            sampler.start()
            busy_start = busy_seconds()
            started = time.monotonic()
            with conn.transaction():
                conn.execute(GENERATE[0], {"n": count})
                delivery = conn.execute(GENERATE[1], {"n": count, "text": TEXT}).fetchone()[0]  # type: ignore[index]
                conn.execute(GENERATE[2], {"delivery": delivery, "text": TEXT})
            result["generate_s"] = time.monotonic() - started
            # the push starts at the commit (created_at is the generating transaction's start)
            committed = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            pushed_seen = False
            started = time.monotonic()
            deadline = started + args.timeout_per_message * count + 120
            while True:
                stack.check()
                row = conn.execute(
                    "SELECT state::text, delivered + failed_hard + failed_soft, pushed_at "
                    "FROM marketing.delivery WHERE id = %s",
                    (delivery,),
                ).fetchone()
                assert row is not None
                if row[2] is not None and not pushed_seen:
                    pushed_seen = True
                if row[0] == "done":
                    break
                if time.monotonic() > deadline:  # the figures so far, and a failed check
                    result["incomplete"] = (
                        f"delivery not done after {time.monotonic() - started:.0f} s: "
                        f"state {row[0]}, {row[1]:,} of {count:,} final in the KPIs"
                    )
                    break
                time.sleep(0.5)
            result["wall_s"] = time.monotonic() - started
            result["machine_busy_s"] = busy_seconds() - busy_start
            sampler.stopping.set()
            sampler.join()
            sampler.sample()
            stats = httpx.get(control).json()
            result["cpu"] = sampler.cpu_seconds()
            result["peak_rss"] = dict(sampler.peak)
            kpi = conn.execute(
                "SELECT to_send, sent, delivered, failed_hard, failed_soft, cancelled, "
                "extract(epoch FROM pushed_at - %s), extract(epoch FROM updated_at - %s) "
                "FROM marketing.delivery WHERE id = %s",
                (committed, committed, delivery),
            ).fetchone()
            assert kpi is not None
            figures = conn.execute(FIGURES).fetchone()
            assert figures is not None
            sizes = conn.execute(SIZES).fetchall()
            result["pg"] = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
            }
        to_send, sent, delivered, failed_hard, failed_soft, cancelled, push_s, kpi_s = kpi
        queued, submitted, finalised, mt_span, final_span, p_submit, p_final, dups = figures
        result.update(
            kpi={"to_send": to_send, "sent": sent, "delivered": delivered,
                 "failed_hard": failed_hard, "failed_soft": failed_soft, "cancelled": cancelled},
            push_s=None if push_s is None else float(push_s),
            push_to_kpi_s=float(kpi_s) if "incomplete" not in result else result["wall_s"],
            mt_span_s=float(mt_span or 0) or 1e-9,
            final_span_s=float(final_span or 0) or 1e-9,
            submitted=submitted,
            finalised=finalised,
            push_to_submit=(p_submit[0], p_submit[1]),
            submit_to_final=(p_final[0], p_final[1]),
            queued=queued,
            possible_duplicates=dups,
            sizes=[(name, total, index) for name, total, index in sizes],
            simulator={k: stats[k] for k in ("accepted", "duplicates", "receipts_generated",
                                            "deliver_sm_resent", "deliver_sm_dropped")},
        )  # fmt: skip
        return result
    finally:
        if sampler is not None:
            sampler.stopping.set()
        # a second Ctrl-C (or `timeout` passing one on) must not leave services behind
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            result["exit_codes"] = stack.stop()
        finally:
            signal.signal(signal.SIGINT, previous)


def problems(result: dict[str, Any], fail_rate: float) -> list[str]:
    """What the run got wrong; empty when every invariant holds."""
    n = result["messages"]
    kpi = result["kpi"]
    failed = kpi["failed_hard"] + kpi["failed_soft"]
    found = [result["incomplete"]] if "incomplete" in result else []
    if kpi["delivered"] + failed != n:
        found.append(f"delivered + failed = {kpi['delivered'] + failed:,}, not {n:,}")
    if kpi["to_send"] or kpi["sent"] or kpi["cancelled"]:
        found.append(f"KPIs not all final: {kpi}")
    if result["queued"] != n:
        found.append(f"{result['queued']:,} messages queued on the mid side, not {n:,}")
    tolerance = 5 * math.sqrt(n * fail_rate * (1 - fail_rate)) + 1
    if abs(failed - n * fail_rate) > tolerance:
        found.append(f"{failed:,} failures, expected {n * fail_rate:,.0f} +- {tolerance:,.0f}")
    sim = result["simulator"]
    if sim["accepted"] != n:
        found.append(f"the simulator accepted {sim['accepted']:,} submits, not {n:,}")
    if sim["duplicates"]:
        found.append(f"the simulator counted {sim['duplicates']:,} duplicates")
    bad_exits = {k: v for k, v in result["exit_codes"].items() if v != 0}
    if bad_exits:
        found.append(f"services did not exit 0 on SIGTERM: {bad_exits}")
    return found


# --- printing ----------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"


def rows_of(result: dict[str, Any]) -> list[tuple[str, str]]:
    n = result["messages"]
    sent, final = result["submitted"], result["finalised"]
    push_s = result["push_s"]
    push_rate = "not pushed" if push_s is None else f"{n / push_s:,.0f} msg/s"
    kpi = result["kpi"]
    done = kpi["delivered"] + kpi["failed_hard"] + kpi["failed_soft"]
    rows = [
        ("completed", "yes" if "incomplete" not in result else "NO (timed out)"),
        ("queued / submitted / final (mid)", f"{result['queued']:,} / {sent:,} / {final:,}"),
        ("recipients generated in SQL (not timed)", f"{result['generate_s']:.1f} s"),
        ("push rate (marketing -> mid queue)", push_rate),
        ("MT/s sustained (first..last sent_at)", f"{sent / result['mt_span_s']:,.0f} MT/s"),
        ("receipts reconciled/s (first..last final)", f"{final / result['final_span_s']:,.0f} /s"),
        ("push to last KPI update", f"{result['push_to_kpi_s']:,.1f} s"),
        ("end to end rate (final in KPIs / that)", f"{done / result['push_to_kpi_s']:,.0f} msg/s"),
        ("push-to-submit p50 / p99", "{:.2f} / {:.2f} s".format(*result["push_to_submit"])),
        ("submit-to-final p50 / p99", "{:.2f} / {:.2f} s".format(*result["submit_to_final"])),
    ]
    kpi = result["kpi"]
    failed = kpi["failed_hard"] + kpi["failed_soft"]
    rows.append(("delivered / failed (KPIs)", f"{kpi['delivered']:,} / {failed:,} "
                 f"({failed / n:.2%})"))  # fmt: skip
    sim = result["simulator"]
    rows.append(("simulator accepted / duplicates", f"{sim['accepted']:,} / {sim['duplicates']}"))
    rows.append(("possible_duplicate flags (mid)", f"{result['possible_duplicates']:,}"))
    for name, value in sorted(result["peak_rss"].items()):
        rows.append((f"peak RSS {name}", mib(value)))
    ours = sum(v for k, v in result["cpu"].items() if not k.startswith("postgresql for"))
    cores = psutil.cpu_count() or 1
    rows.append(
        (
            "machine busy (all processes)",
            f"{result['machine_busy_s'] / result['wall_s']:.2f} of {cores} cores",
        )
    )
    rows.append(
        ("CPU of the stack / machine busy", f"{ours:,.1f} s / {result['machine_busy_s']:,.1f} s")
    )
    rows.append(("CPU of the stack per message", f"{ours / n * 1e3:.3f} ms"))
    for name, value in sorted(result["cpu"].items()):
        rows.append((f"CPU {name}", f"{value:,.1f} s ({value / ours:.0%})"))
    for name, total, index in result["sizes"][:8]:
        rows.append((f"size {name} (indexes)", f"{mib(total)} ({mib(index)})"))
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [dict(rows_of(r)) for r in results]
    labels: list[str] = []
    for result in results:
        for label, _ in rows_of(result):
            if label not in labels:
                labels.append(label)
    width = max(len(label) for label in labels)
    cell = 2 + max(len(value) for column in columns for value in column.values())
    head = "".join(f"{r['messages']:>{cell},}" for r in results)
    print(f"{'messages':<{width}}{head}")
    for label in labels:
        cells = "".join(f"{c.get(label, '-'):>{cell}}" for c in columns)
        print(f"{label:<{width}}{cells}")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        ratio = b["messages"] / a["messages"]
        print(
            f"\ngrowth {a['messages']:,} -> {b['messages']:,} (messages x{ratio:.1f}): "
            f"push-to-last-KPI time x{b['push_to_kpi_s'] / a['push_to_kpi_s']:.2f}, "
            f"MT span x{b['mt_span_s'] / a['mt_span_s']:.2f}, "
            + (
                f"push time x{b['push_s'] / a['push_s']:.2f}"
                if a["push_s"] and b["push_s"]
                else "push time: not comparable (a push did not finish)"
            )
        )
        for name in sorted(b["peak_rss"]):
            if name in a["peak_rss"]:
                print(f"  peak RSS {name:<22} x{b['peak_rss'][name] / a['peak_rss'][name]:.2f}")


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)  # stop the services and PostgreSQL too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", default="100000,1000000", help="sizes, comma-separated (default 100k,1M)"
    )
    parser.add_argument("--children", type=int, default=2, help="MTA children")
    parser.add_argument("--connections", type=int, default=2, help="transmitter binds per child")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--dlr-delay-ms", type=float, default=100.0)
    parser.add_argument("--fail-rate", type=float, default=0.05)
    parser.add_argument("--push-chunk", type=int, default=10_000, help="marketing push_chunk_size")
    parser.add_argument("--pull-page", type=int, default=5_000, help="marketing pull_page_size")
    parser.add_argument("--pull-interval", type=float, default=1.0, help="marketing pull loop")
    parser.add_argument("--sample", type=float, default=0.5, help="RSS sampling period, s")
    parser.add_argument(
        "--timeout-per-message", type=float, default=0.005,
        help="each run fails after 120 s + this x N seconds",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the logs and settings")
    parser.add_argument(
        "--database-url", help="a PostgreSQL server to create databases on (default: "
        "SMSMTA_DATABASE_URL, else an embedded PostgreSQL)",
    )  # fmt: skip
    args = parser.parse_args()
    try:
        sizes = [int(s.replace("_", "")) for s in args.messages.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--messages: give comma-separated integers, not {args.messages!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--messages: every size must be at least 1")
    if not 0 <= args.fail_rate <= 1:
        parser.error("--fail-rate must be between 0 and 1")

    print(
        conditions.describe_conditions(
            "End-to-end benchmark: marketing push -> mid -> MTA -> simulator -> SMS process "
            "-> marketing KPIs",
            rows=[
                (
                    "settings",
                    f"MTA {args.children} children x {args.connections} binds, window "
                    f"{args.window}, no rate cap; simulator receipt delay {args.dlr_delay_ms:g} "
                    f"ms, fail rate {args.fail_rate:.0%}; marketing push chunk "
                    f"{args.push_chunk:,}, pull page {args.pull_page:,}, pull interval "
                    f"{args.pull_interval:g} s",
                ),
                ("processes", "each service, the simulator and PostgreSQL in its own process(es)"),
            ],
        )
    )
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir="/tmp"))
        if not args.keep:
            stack.callback(shutil.rmtree, root, True)
        server_url, where = stack.enter_context(server(args.database_url, "bench-e2e-pg-"))
        for count in sizes:
            folder = root / f"run-{count}"
            folder.mkdir()
            with scratch_database(server_url, "bench_e2e", shield_drop=True) as url:
                try:
                    for side in ("mid", "marketing"):
                        migrate.upgrade(url, side)
                    print(f"\nrunning {count:,} messages (logs in {folder}) ...", flush=True)
                    result = one_run(url.render_as_string(hide_password=False), count, args, folder)
                    found = problems(result, args.fail_rate)
                    for problem in found:
                        print(f"  CHECK FAILED: {problem}")
                    failures += [f"{count:,}: {p}" for p in found]
                    print(f"  done in {result['wall_s']:.1f} s, load {os.getloadavg()[0]:.2f}")
                    results.append(result)
                except RuntimeError as error:
                    failures.append(f"{count:,}: {error}")
                    print(f"  FAILED: {error}")
                except KeyboardInterrupt:
                    failures.append(f"{count:,}: interrupted")
                    print("  interrupted: services stopped")
                    break
        if results:
            pg = results[-1]["pg"]
            print(
                f"\nPostgreSQL {pg['server_version']} ({where}): fsync {pg['fsync']}, "
                f"synchronous_commit {pg['synchronous_commit']}, shared_buffers "
                f"{pg['shared_buffers']}\n"
            )
            print_table(results)
    if failures:
        print("\nFAILED checks:\n  " + "\n  ".join(failures))
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
