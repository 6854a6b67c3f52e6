"""Benchmark: a legitimate marketing client while the mid API is attacked (issue 14).

What runs, all on 127.0.0.1: a PostgreSQL (`--database-url` / SMSMTA_DATABASE_URL, on
which a scratch database is created and dropped; else an embedded pgserver), the real
`smsmta mid` process with its default HTTP limits, and in this process:
- the legitimate client: one task pushing chunks of --chunk messages and one pulling
  statuses, each with a bearer token on its own keep-alive connection, back to back;
- from --baseline seconds on, for --seconds seconds, three attacks together:
  a bad-credential flood (--flood tasks posting /api/v1/token with wrong Basic
  passwords for real and invented logins, each on a new connection), invented HTTP
  methods (--methods tasks, a new method name each request), and --slow half-sent
  requests (slowloris: headers dribbled one byte every --dribble seconds, reopened when
  the server closes them).
Prints the conditions, then for the legitimate client before and during the attack:
requests, p50/p99/max latency and errors; the mid's peak RSS and CPU (psutil, sampled
every 0.25 s); what the attackers got. Target: p99 under 250 ms and RSS under 300 MB
during the attack; exit status 1 when missed.

Usage: .venv/bin/python bench/attack.py [--seconds 60] [--baseline 10] [--flood 8]
       [--methods 4] [--slow 1500] [--chunk 100] [--database-url URL]
A quick check: --seconds 10. Bounded: baseline + seconds + about 20 s of set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy import URL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from midsourcing import auth  # noqa: E402
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn  # noqa: E402
from smsmta.testing import stack  # noqa: E402
from smsmta.testing.conditions import python_version  # noqa: E402
from smsmta.testing.settings import mid_api_accounts, mid_document, write_document  # noqa: E402

OPS_PASSWORD = "correct horse battery"
P99_TARGET_MS = 250.0
RSS_TARGET_MB = 300.0


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    peak_rss: int = 0
    cpu: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class State:
    phase: str = "before"
    stop: bool = False
    phases: dict[str, Phase] = field(
        default_factory=lambda: {"before": Phase(), "during": Phase(), "after": Phase()}
    )
    attack: Counter[str] = field(default_factory=Counter)


@contextlib.contextmanager
def database(url: str | None) -> Iterator[URL]:
    with (
        stack.server(url, "smsmta-attack-") as (server_url, _),
        stack.scratch_database(server_url, "smsmta_attack", migrated=True) as scratch,
    ):
        yield scratch


def start_mid(db: URL, folder: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = stack.free_port()
    accounts = mid_api_accounts()
    mid = {
        "listen": "127.0.0.1",
        "port": port,
        "metrics_port": None,
        "login_free_failures": 3,
        "login_base_delay": 1.0,
        "login_max_delay": 60.0,
    }
    config = write_document(folder / "mid.yaml", mid_document(accounts, host_id=None, mid=mid))
    log = folder / "mid.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            stack.cli_command("mid", "--config", str(config)),
            stdout=out,
            stderr=out,
            env=stack.service_env(db.render_as_string(hide_password=False)),
            cwd=ROOT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the mid server died: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return process, port, log
        if time.monotonic() > deadline:
            raise SystemExit("the mid server did not start")
        time.sleep(0.1)


async def timed(state: State, call: object) -> None:
    phase = state.phases[state.phase]
    started = time.perf_counter()
    try:
        response = await call  # type: ignore[misc]
    except httpx.HTTPError as exc:
        phase.errors[type(exc).__name__] += 1
        return
    phase.latencies.append(time.perf_counter() - started)
    if response.status_code >= 400:
        phase.errors[f"HTTP {response.status_code}"] += 1


async def pusher(state: State, url: str, token: str, delivery: int, chunk: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    next_id = 1
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        while not state.stop:
            messages = [
                {"id": next_id + i, "to": f"+336{(next_id + i) % 10**8:08d}", "text": "hello"}
                for i in range(chunk)
            ]
            next_id += chunk
            await timed(
                state,
                client.post(f"/api/v1/deliveries/{delivery}/messages", json={"messages": messages}),
            )
            await asyncio.sleep(0.01)


async def puller(state: State, url: str, token: str, delivery: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        while not state.stop:
            await timed(state, client.get(f"/api/v1/deliveries/{delivery}/statuses"))
            await asyncio.sleep(0.01)


async def flood(state: State, url: str) -> None:
    """Wrong passwords, a new connection each time (as a spraying botnet would)."""
    while not state.stop:
        login = random.choice(["ops", "admin", f"user{random.randrange(10**6)}"])
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                response = await client.post(
                    "/api/v1/token", auth=(login, f"guess{random.randrange(10**9)}")
                )
            state.attack[f"flood HTTP {response.status_code}"] += 1
        except httpx.HTTPError as exc:
            state.attack[f"flood {type(exc).__name__}"] += 1


async def methods(state: State, url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not state.stop:
            method = f"M{random.randrange(10**9)}"
            path = random.choice(["/healthz", "/api/v1/deliveries/1", f"/x{random.random()}"])
            try:
                response = await client.request(method, path)
                state.attack[f"methods HTTP {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                state.attack[f"methods {type(exc).__name__}"] += 1


async def slow_connection(state: State, port: int, dribble: float) -> None:
    """A half-sent request, one header byte at a time; reopened when the server cuts it."""
    header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    while not state.stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            state.attack["slow connect refused"] += 1
            await asyncio.sleep(1)
            continue
        state.attack["slow opened"] += 1
        opened = time.monotonic()
        try:
            for byte in header:
                if state.stop:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if not await asyncio.wait_for(reader.read(1024), dribble):
                        raise ConnectionResetError
            else:
                state.attack["slow finished headers"] += 1
        except OSError:
            state.attack["slow cut by the server"] += 1
            state.attack["slow seconds held"] += int(time.monotonic() - opened)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def sample(state: State, pid: int) -> None:
    process = psutil.Process(pid)
    process.cpu_percent()
    while not state.stop:
        await asyncio.sleep(0.25)
        with contextlib.suppress(psutil.Error):
            phase = state.phases[state.phase]
            phase.peak_rss = max(phase.peak_rss, process.memory_info().rss)
            phase.cpu.append(process.cpu_percent())


async def run(args: argparse.Namespace, port: int, pid: int) -> State:
    url = f"http://127.0.0.1:{port}"
    state = State()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        token = (await client.post("/api/v1/token", auth=("ops", OPS_PASSWORD))).json()["token"]
        created = await client.post(
            "/api/v1/deliveries",
            json={"marketing_account": "sms", "marketing_delivery_id": f"attack{time.time_ns()}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        delivery = created.json()["id"]
    tasks = [
        asyncio.create_task(sample(state, pid)),
        asyncio.create_task(pusher(state, url, token, delivery, args.chunk)),
        asyncio.create_task(puller(state, url, token, delivery)),
    ]
    await asyncio.sleep(args.baseline)
    # the attackers run in their own process: their event loop must not delay (and so
    # inflate the latency measured for) the legitimate client's
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--attacker",
        str(port),
        *("--seconds", str(args.seconds), "--flood", str(args.flood)),
        *("--methods", str(args.methods), "--slow", str(args.slow)),
        *("--dribble", str(args.dribble)),
        stdout=asyncio.subprocess.PIPE,
    )
    state.phase = "during"
    out, _err = await asyncio.wait_for(attacker.communicate(), args.seconds + 60)
    state.phase = "after"
    state.stop = True
    _done, pending = await asyncio.wait(tasks, timeout=15)
    for task in pending:
        task.cancel()
    with contextlib.suppress(ValueError):
        state.attack.update(json.loads(out.decode().strip().splitlines()[-1]))
    return state


async def attack(args: argparse.Namespace, port: int) -> Counter[str]:
    """The three attacks together for args.seconds (the --attacker process)."""
    state = State()
    url = f"http://127.0.0.1:{port}"
    tasks = [asyncio.create_task(flood(state, url)) for _ in range(args.flood)]
    tasks += [asyncio.create_task(methods(state, url)) for _ in range(args.methods)]
    for _ in range(args.slow):
        tasks.append(asyncio.create_task(slow_connection(state, port, args.dribble)))
    await asyncio.sleep(args.seconds)
    state.stop = True
    _done, pending = await asyncio.wait(tasks, timeout=5)
    for task in pending:
        task.cancel()
    return state.attack


def report(args: argparse.Namespace, state: State, db_kind: str) -> int:
    cores = os.cpu_count()
    print("conditions:")
    print(f"  host: {cores} cores, Python {python_version()}; {db_kind}")
    print(
        "  mid: `smsmta mid` subprocess, default HTTP limits (README 'HTTP limits'), open "
        f"files limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; attackers in their "
        "own process"
    )
    print(
        f"  legitimate client: 1 pusher (chunks of {args.chunk}) + 1 puller, bearer token, "
        "keep-alive, back to back (10 ms pause)"
    )
    print(
        f"  attack for {args.seconds:.0f} s after {args.baseline:.0f} s of baseline: "
        f"{args.flood} bad-credential flooders (new connection each), {args.methods} "
        f"invented-method senders, {args.slow} slowloris connections (1 byte / {args.dribble} s)"
    )
    print()
    print(f"{'phase':<8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'peak RSS MB':>12} {'CPU avg %':>10} {'CPU max %':>10}  errors")  # fmt: skip
    for name, phase in state.phases.items():
        cpu_avg = sum(phase.cpu) / len(phase.cpu) if phase.cpu else 0.0
        print(
            f"{name:<8} {len(phase.latencies):>9} {phase.percentile(0.5):>8.1f} "
            f"{phase.percentile(0.99):>8.1f} {max(phase.latencies, default=0) * 1000:>8.1f} "
            f"{phase.peak_rss / 2**20:>12.0f} {cpu_avg:>10.0f} {max(phase.cpu, default=0):>10.0f}"
            f"  {dict(phase.errors) or 'none'}"
        )
    print()
    print("attackers got: " + ", ".join(f"{k}: {v}" for k, v in sorted(state.attack.items())))
    during = state.phases["during"]
    p99 = during.percentile(0.99)
    rss = during.peak_rss / 2**20
    ok = p99 < P99_TARGET_MS and rss < RSS_TARGET_MB and not during.errors
    print(
        f"target: p99 < {P99_TARGET_MS:.0f} ms and RSS < {RSS_TARGET_MB:.0f} MB during the "
        f"attack, no error: p99 {p99:.1f} ms, RSS {rss:.0f} MB, "
        f"{sum(during.errors.values())} errors -> {'MET' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="attack duration")
    parser.add_argument("--baseline", type=float, default=None, help="default min(10, seconds)")
    parser.add_argument("--flood", type=int, default=8, help="bad-credential flooders")
    parser.add_argument("--methods", type=int, default=4, help="invented-method senders")
    parser.add_argument("--slow", type=int, default=1500, help="slowloris connections")
    parser.add_argument("--dribble", type=float, default=2.0, help="seconds between bytes")
    parser.add_argument("--chunk", type=int, default=100, help="messages per legitimate push")
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV))
    parser.add_argument("--attacker", type=int, help=argparse.SUPPRESS)  # internal: the port
    args = parser.parse_args()
    if args.attacker:
        print(json.dumps(asyncio.run(attack(args, args.attacker))))
        return
    if args.baseline is None:
        args.baseline = min(10.0, args.seconds)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, args.slow + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    args.slow = min(args.slow, wanted - 512)
    db_kind = (
        "external PostgreSQL (--database-url / SMSMTA_DATABASE_URL)"
        if args.database_url
        else "embedded PostgreSQL (pgserver)"
    )
    with database(args.database_url) as db, tempfile.TemporaryDirectory() as folder:
        auth.add_operator(libpq_dsn(db), "ops", "Operations", OPS_PASSWORD, ["ADMINISTRATION"])
        process, port, _log = start_mid(db, Path(folder))
        try:
            state = asyncio.run(run(args, port, process.pid))
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        status = report(args, state, db_kind)
    sys.exit(status)


if __name__ == "__main__":
    main()
