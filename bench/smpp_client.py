"""Benchmark: our asyncio SMPP client against the simulator over loopback.

Prints, with the conditions they were measured under:

1. submit_sm/s from one transmitter bind, window 100, to the simulator answering at once;
2. with a 50 ms response delay, the share of window / RTT reached at windows 10 and 100
   (the ceiling of a windowed protocol: window messages per round trip);
3. the CPU each side used, to say which one limits the figure.

The simulator runs in its own process (its own core on a 2-core machine), as it would
against a real SMSC. Usage: .venv/bin/python bench/smpp_client.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
from pathlib import Path

import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.aio import BaseHandler, BindSettings, SmppConnection, connect
from smsmta.smpp.pdu import SubmitSm
from smsmta.smpp.session import Response, Timeouts
from smsmta.testing.conditions import describe_conditions


def run_simulator(port: int, resp_delay_ms: float, ready: multiprocessing.Event) -> None:
    async def serve() -> None:
        config = SimulatorConfig(port=port, resp_delay_ms=resp_delay_ms, seed=1)
        async with Smsc(config):
            ready.set()
            await asyncio.Event().wait()

    uvloop.run(serve())


class Counter(BaseHandler):
    def __init__(self) -> None:
        self.first_answer: float | None = None
        self.answered_before_first = 0
        self.answered = 0
        self.errors = 0
        self.done = asyncio.Event()
        self.target = 0
        self.wakeup = asyncio.Event()

    def on_response(self, conn: SmppConnection, response: Response) -> None:
        if self.first_answer is None:
            self.first_answer = conn.loop.time()
            self.answered_before_first = self.answered
        self.answered += 1
        if response.pdu.command_status:
            self.errors += 1
        if self.answered >= self.target:
            self.done.set()
        self.wakeup.set()


async def drive(port: int, window: int, messages: int, seconds: float | None) -> dict:
    handler = Counter()
    settings = BindSettings(
        host="127.0.0.1",
        port=port,
        system_id="smsmta",
        password="secret",
        window=window,
        timeouts=Timeouts(response=30, bind=10, enquire_link_period=60),
    )
    conn = await connect(settings, handler)
    pdu = SubmitSm(
        source_addr="38000",
        destination_addr="33612345678",
        short_message=b"Hello from the smsmta client benchmark",
        registered_delivery=0,
    )
    handler.target = messages
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds if seconds else None
    sent = 0
    while sent < messages:
        free = conn.window_free
        if deadline is not None and loop.time() >= deadline:
            break
        if free <= 0:
            handler.wakeup.clear()
            await handler.wakeup.wait()
            continue
        for _ in range(min(free, messages - sent)):
            conn.submit(pdu)
        sent += min(free, messages - sent)
        await asyncio.sleep(0)
    if deadline is None:
        await handler.done.wait()
    ended = loop.time()
    answered = handler.answered
    first = handler.first_answer or started
    await conn.unbind()
    conn.close()
    return {
        "answered": answered,
        "errors": handler.errors,
        "elapsed": ended - started,
        # steady state: from the first answer on (the first round trip carries none)
        "steady_rate": (answered - handler.answered_before_first - 1) / max(1e-9, ended - first),
    }


def measure(port: int, resp_delay_ms: float, window: int, messages: int, seconds: float | None):
    ready = multiprocessing.Event()
    simulator = multiprocessing.Process(
        target=run_simulator, args=(port, resp_delay_ms, ready), daemon=True
    )
    simulator.start()
    ready.wait(10)
    sim_process = psutil.Process(simulator.pid)
    me = psutil.Process()
    sim_before, me_before = sim_process.cpu_times(), me.cpu_times()
    result = uvloop.run(drive(port, window, messages, seconds))
    sim_after, me_after = sim_process.cpu_times(), me.cpu_times()
    simulator.terminate()
    simulator.join(5)
    elapsed = result["elapsed"]
    result["client_cpu"] = (
        me_after.user + me_after.system - me_before.user - me_before.system
    ) / elapsed
    result["simulator_cpu"] = (
        sim_after.user + sim_after.system - sim_before.user - sim_before.system
    ) / elapsed
    result["rate"] = result["answered"] / elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per window/RTT run")
    parser.add_argument("--port", type=int, default=27750)
    args = parser.parse_args()
    print(
        describe_conditions(
            "SMPP client benchmark: smsmta.smpp.aio client -> smsmta.simulator over 127.0.0.1",
            rows=[
                ("event loop", "uvloop"),
                ("processes", "client and simulator in separate processes; 1 transmitter bind"),
            ],
        )
    )
    print()
    result = measure(args.port, 0.0, 100, args.messages, None)
    print(f"1. throughput, window 100, no response delay, {args.messages:,} submit_sm")
    print(f"   {result['rate']:,.0f} submit_sm/s ({result['errors']} errors)")
    print(
        f"   cpu: client {result['client_cpu']:.0%} of a core, "
        f"simulator {result['simulator_cpu']:.0%} of a core -> limited by the "
        f"{'client' if result['client_cpu'] > result['simulator_cpu'] else 'simulator'}"
    )
    print()
    print(f"2. window / RTT with a 50 ms response delay, {args.seconds:g} s each")
    for window in (10, 100):
        ideal = window / 0.050
        result = measure(args.port + window, 50.0, window, 10**9, args.seconds)
        rate = result["steady_rate"]
        print(
            f"   window {window:>3}: {rate:,.0f} submit_sm/s of {ideal:,.0f} ideal "
            f"= {rate / ideal:.1%} of window/RTT (steady state, from the first answer; "
            f"{result['rate'] / ideal:.1%} counting the first empty round trip)"
        )


if __name__ == "__main__":
    main()
