"""Benchmark: every fault of issue 9 at a higher load and for longer, as one table.

The same stack and the same measurements as tests/faults (`smsmta.testing.faults`): its
own embedded PostgreSQL, the mid server, the MTA, the SMS process and the marketing
service as subprocesses, the simulator and a TCP proxy in this process. For each fault:
one delivery of --messages messages (each to its own destination) at the account's cap
(--rate MT/s), the fault injected after --warmup seconds of load and cleared after
--duration seconds (a slow SMSC lasts at least 2.5 s, a network cut at least 5 s), then
the run drains. Prints, per fault: messages, lost (not final after the drain), duplicates
(accepted twice by the simulator), the bound (window x connections x children whose
responses the fault may lose), failed, recovery seconds (to 80% of the MT rate before
the fault, or to the first message made final for faults off the MT path) and MT/s
before / during / after; then the conditions. Exit status 1 when a row breaks the promise
(lost > 0 or duplicates over the bound).

Usage: .venv/bin/python bench/faults.py [--faults all|name,name] [--messages 20000]
       [--rate 3000] [--warmup 2] [--duration 3] [--children 2] [--connections 2]
       [--window 50] [--mt-timeout 3] [--drain-timeout 120] [--list]
Each fault is bounded by --drain-timeout; the whole run by the number of faults times
(warmup + duration + drain timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smsmta.testing.fault_stack import Sizes, fault_stack  # noqa: E402
from smsmta.testing.faults import FAULTS, FaultRow, conditions, format_table, run_fault  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default="all", help="comma-separated names, or all")
    parser.add_argument("--list", action="store_true", help="print the fault names and exit")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per fault")
    parser.add_argument("--rate", type=int, default=3_000, help="the account's cap, MT/s")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds the fault lasts")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2, help="binds per child")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--mt-timeout", type=float, default=3.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    for name in ("messages", "rate", "children", "connections", "window"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("warmup", "duration", "drain_timeout"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.mt_timeout <= 2.0:
        parser.error("--mt-timeout must be over 2 s: the slow SMSC answers after 2 s")
    return args


def chosen(names: str) -> list[str]:
    if names == "all":
        return list(FAULTS)
    picked = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in picked if name not in FAULTS]
    if unknown or not picked:
        raise SystemExit(
            f"--faults: unknown fault(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(FAULTS)}"
        )
    return picked


async def main_async(args: argparse.Namespace, names: list[str]) -> list[FaultRow]:
    sizes = Sizes(
        messages=args.messages,
        rate=args.rate,
        warmup=args.warmup,
        duration=args.duration,
        drain_timeout=args.drain_timeout,
        children=args.children,
        connections=args.connections,
        window=args.window,
        mt_timeout=args.mt_timeout,
        push_chunk_size=max(100, args.messages // 20),
    )
    rows: list[FaultRow] = []
    with tempfile.TemporaryDirectory(prefix="smsmta-bench-faults-") as tmp:
        started = time.monotonic()
        async with fault_stack(Path(tmp), sizes) as stack:
            print(f"stack up in {time.monotonic() - started:.1f} s", flush=True)
            for name in names:
                began = time.monotonic()
                try:
                    row = await run_fault(stack, FAULTS[name], sizes)
                except AssertionError as error:  # a service died: say so, go on
                    print(f"{name}: {error}", flush=True)
                    await stack.check_alive(("sms-process", "mid"))
                    continue
                rows.append(row)
                print(format_table([row]).splitlines()[-1], f"[{time.monotonic() - began:.0f} s]")
        print()
        print(format_table(rows))
        print(conditions(sizes))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        print("\n".join(FAULTS))
        return 0
    names = chosen(args.faults)
    # the simulator's per-connection info lines would drown the table
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rows = asyncio.run(main_async(args, names))
    broken = [r.fault for r in rows if r.lost or r.duplicates > r.bound]
    if broken or len(rows) < len(names):
        print(f"PROMISE BROKEN or fault not run: {', '.join(broken) or 'see above'}")
        return 1
    print("every row: 0 lost, duplicates within the bound")
    return 0


if __name__ == "__main__":
    sys.exit(main())
