"""Fuzz the live SMPP sessions with many mutated PDUs and print the count tables.

The same mutations, expected answers and drivers as tests/badinput/test_smpp_fuzz.py
(smsmta/testing/smpp_fuzzer.py), with more PDUs:

- `client`: our SmppClient (receiver bind) against a raw fake SMSC, in this process;
- `simulator`: `smsmta smsc-sim` as a subprocess, fuzzed by a raw-socket transceiver;
- `sms-process` and `mta` (with --services): the real services as subprocesses, bound to
  the fake SMSC, against a PostgreSQL (SMSMTA_DATABASE_URL's server, else an embedded one).

For each target it prints PDUs sent by mutation, answers by kind (generic_nack by status,
*_resp by status, no answer), connection closes, re-binds, crashes and mismatches, then
the conditions (cores, load average, seed, PDU counts, elapsed time). Exit status 1 when
any target crashed or answered against SMPP 3.4.

Usage: .venv/bin/python bench/fuzz_session.py [--pdus N] [--seed S] [--services]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from smsmta.db.engine import libpq_dsn
from smsmta.smpp.aio import BaseHandler, SmppClient
from smsmta.testing.conditions import load, python_version
from smsmta.testing.harness import Harness, SmsHarness, mid_config, sms_config
from smsmta.testing.smpp_fuzzer import (
    EsmeLinks,
    FakeSmsc,
    Tally,
    fuzz_esme,
    fuzz_smsc,
    receiver_settings,
)
from smsmta.testing.smpp_mutations import (
    ESME_RX,
    ESME_TX,
    SMSC_TRX,
    make_cases,
)
from smsmta.testing.stack import Stack, free_port, scratch_database, server


async def fuzz_client(pdus: int, seed: int) -> Tally:
    loop = asyncio.get_running_loop()
    unhandled: list[object] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    tally = Tally("our SmppClient (receiver)")
    async with FakeSmsc() as smsc:
        settings = receiver_settings(smsc.port)
        client = SmppClient(settings, BaseHandler())
        task = asyncio.create_task(client.run())
        await fuzz_esme(smsc, make_cases(seed, ESME_RX, pdus), tally)
        tally.crashes += len(unhandled) + task.done()
        for link in smsc.all_links:
            tally.mismatches += link.invalid
        await client.stop(0)
        await task
    return tally


async def fuzz_simulator(pdus: int, seed: int, tmp: Path) -> Tally:
    tally = Tally("simulator (smsc-sim, transceiver)")
    stack = Stack(tmp, "")
    port = free_port()
    simulator = stack.start("smsc-sim", "smsc-sim", "--port", str(port), "--seed", "5")
    try:
        await asyncio.to_thread(stack.wait_for_port, port)
        links = EsmeLinks("127.0.0.1", port, "smsmta", "secret")
        try:
            await fuzz_smsc(links, make_cases(seed + 3, SMSC_TRX, pdus), tally)
        finally:
            links.close()
        log = simulator.log.read_text(errors="replace")
        tally.crashes += not simulator.alive() or "Traceback" in log
        for link in links.all_links:
            tally.mismatches += link.invalid
    finally:
        stack.stop()
    return tally


async def fuzz_services(pdus: int, seed: int, url: object, tmp: Path) -> list[tuple[Tally, float]]:
    tallies = []
    sms = SmsHarness(url, tmp, libpq_dsn(url))  # type: ignore[arg-type]
    sms.services = []
    try:
        async with FakeSmsc() as smsc:
            path, _ = sms.write_config(sms_config(smsc.port), "sms.yaml")
            process = await sms.start_sms_process(path)
            await smsc.bound_link(60)
            t0 = time.perf_counter()
            tally = Tally("SMS process (receiver)")
            await fuzz_esme(smsc, make_cases(seed + 1, ESME_RX, pdus), tally)
            tally.crashes += process.process.returncode is not None or "Traceback" in process.log()
            for link in smsc.all_links:
                tally.mismatches += link.invalid
            tallies.append((tally, time.perf_counter() - t0))
            await process.stop()
    finally:
        sms.kill_all()
    harness = Harness(url, tmp, libpq_dsn(url))  # type: ignore[arg-type]
    try:
        async with FakeSmsc() as smsc:
            path, _ = harness.write_config(mid_config(smsc.port, children=1, connections=1))
            mta = await harness.start_mta(path)
            await smsc.bound_link(60)
            children = {child.pid for child in mta.children()}
            t0 = time.perf_counter()
            tally = Tally("MTA (transmitter)")
            await fuzz_esme(smsc, make_cases(seed + 2, ESME_TX, pdus), tally)
            tally.crashes += (
                mta.process.returncode is not None
                or {child.pid for child in mta.children()} != children
                or "Traceback" in mta.log()
            )
            for link in smsc.all_links:
                tally.mismatches += link.invalid
            tallies.append((tally, time.perf_counter() - t0))
            await mta.stop()
    finally:
        harness.kill_all()
    return tallies


async def bench(args: argparse.Namespace, url: object | None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fuzz-", dir="/tmp"))
    results: list[tuple[Tally, float]] = []
    started = time.perf_counter()
    runs = [
        ("client", lambda: fuzz_client(args.pdus, args.seed)),
        ("simulator", lambda: fuzz_simulator(args.pdus, args.seed, tmp)),
    ]
    for _name, run in runs:
        t0 = time.perf_counter()
        tally = await run()
        results.append((tally, time.perf_counter() - t0))
    if url is not None:
        results += await fuzz_services(args.pdus, args.seed, url, tmp)
    failed = 0
    for tally, elapsed in results:
        print(tally.table())
        sent = sum(tally.sent.values())
        print(
            f"   {sent} PDUs in {elapsed:.1f} s ({sent / elapsed:,.0f} PDUs/s, reconnects included)"
        )
        failed += tally.crashes + len(tally.mismatches)
    print(
        f"\nconditions: {os.cpu_count()} cores, load average {load()}, Python"
        f" {python_version()}, seed {args.seed},"
        f" {args.pdus} mutated PDUs per target, services {'on' if url else 'off'},"
        f" total {time.perf_counter() - started:.1f} s"
    )
    print(f"crashes + mismatches over all targets: {failed}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdus", type=int, default=20_000, help="mutated PDUs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--services", action="store_true", help="also fuzz the SMS process and the MTA"
    )
    args = parser.parse_args()
    # the in-process client logs a warning per malformed PDU: keep only errors
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if args.pdus < 1:
        parser.error("--pdus must be at least 1")
    if not args.services:
        status = asyncio.run(bench(args, None))
    else:
        with (
            server(None, "bench-fuzz-pg-") as (server_url, _),
            scratch_database(server_url, "bench_fuzz", migrated=True) as url,
        ):
            status = asyncio.run(bench(args, url))
    sys.exit(status)


if __name__ == "__main__":
    main()
