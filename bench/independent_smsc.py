"""Benchmark: smsmta's promises against an SMSC we did not write, as one table.

Runs the scenarios of tests/independent (`smsmta.testing.scenarios.SCENARIOS`: decimal
ids, hex submit ids with decimal text ids, TLV-only ids, throttling, dropped links, bind
limits, MO/STOP, multipart with receipts on all parts) against smsc.js (the npm package
`smpp`), each with --scale times its messages, the real `smsmta mta` and `smsmta
sms-process` as subprocesses and a fresh database each (on SMSMTA_DATABASE_URL's server,
or an embedded PostgreSQL). Prints, per scenario: messages, sent (accepted by the SMSC),
receipts matched (final status = the SMSC's outcome), duplicates and their bound, opt-outs
honoured, lost, the most concurrent binds the SMSC saw and those it refused, throttled
answers, seconds; then the conditions. Exit status 1 when a row breaks a promise.

Usage: .venv/bin/python bench/independent_smsc.py [--scale 1] [--scenarios all|a,b]
Touches: a database per scenario (dropped after), node and smsmta subprocesses, sockets
on 127.0.0.1, a temporary directory (removed after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smsmta.db.engine import libpq_dsn  # noqa: E402
from smsmta.testing.conditions import load  # noqa: E402
from smsmta.testing.harness import SmsHarness  # noqa: E402
from smsmta.testing.independent import ensure_node_modules  # noqa: E402
from smsmta.testing.scenarios import (  # noqa: E402
    SCENARIOS,
    Result,
    assert_promises,
    run_scenario,
    scaled,
)
from smsmta.testing.stack import scratch_database, server  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times each scenario's count")
    parser.add_argument("--scenarios", default="all", help="comma-separated names, or all")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be over 0")
    names = [s.name for s in SCENARIOS]
    if args.scenarios != "all":
        picked = [n.strip() for n in args.scenarios.split(",") if n.strip()]
        unknown = [n for n in picked if n not in names]
        if unknown or not picked:
            parser.error(f"unknown scenarios {unknown}; known: {', '.join(names)}")
        args.picked = picked
    else:
        args.picked = names
    return args


def table(rows: list[tuple[Result, str]]) -> str:
    header = (
        f"{'scenario':<32} {'msgs':>5} {'sent':>5} {'matched':>7} {'dups':>4} {'bound':>5} "
        f"{'opt-outs':>8} {'lost':>4} {'binds':>5} {'refused':>7} {'thrott':>6} {'secs':>5}  "
        "promises"
    )
    lines = [header, "-" * len(header)]
    for r, verdict in rows:
        lines.append(
            f"{r.scenario:<32} {r.messages:>5} {r.sent:>5} {r.receipts_matched:>7} "
            f"{r.duplicates:>4} {r.duplicate_bound:>5} "
            f"{f'{r.opt_outs_honoured}/{r.opt_outs}':>8} {r.lost:>4} {r.max_binds_seen:>5} "
            f"{r.binds_refused:>7} {r.throttled:>6} {r.seconds:>5.1f}  {verdict}"
        )
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    node = ensure_node_modules()
    version = (await asyncio.to_thread(os.popen, f"{node} --version")).read().strip()
    work = Path(tempfile.mkdtemp(prefix="smsmta-independent-", dir="/tmp"))
    rows: list[tuple[Result, str]] = []
    try:
        with server(None, "smsmta-independent-pg-") as (server_url, _):
            for scenario in SCENARIOS:
                if scenario.name not in args.picked:
                    continue
                scenario = scaled(scenario, args.scale)
                directory = work / scenario.name
                directory.mkdir()
                with scratch_database(server_url, "smsmta_indep", migrated=True) as url:
                    harness = SmsHarness(url, directory, libpq_dsn(url))
                    harness.services = []
                    try:
                        result = await run_scenario(harness, node, scenario, directory)
                    finally:
                        harness.kill_all()
                try:
                    assert_promises(result, scenario)
                    verdict = "kept"
                except AssertionError as broken:
                    verdict = "BROKEN: " + "; ".join(str(broken).splitlines()[1:])[:300]
                rows.append((result, verdict))
                print(result.line(), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    print(
        f"\nconditions: independent SMSC smsc.js on the npm package smpp 0.5.1 ({node} "
        f"{version}), 30% of destinations failing (UNDELIV/REJECTD, an err code each), "
        f"receipts 50 ms after the answer; scale {args.scale}; real smsmta mta + "
        f"sms-process subprocesses, a fresh database each; machine {psutil.cpu_count()} "
        f"cores, load average {load()}"
    )
    return 0 if all(verdict == "kept" for _, verdict in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
