"""Scale-out: two mid hosts on one PostgreSQL share one account's contract.

Two "hosts", each its own settings file with its own `host_id` and mid port, each running
`smsmta mid` and `smsmta mta` (one child); one `smsmta sms-process`; one simulator (in
this process, so that it stamps every arrival); one database. Half the messages are
pushed through each mid server (two deliveries, one a mid server, pushed at once).
What must hold across the two hosts:

- every message reaches the SMSC exactly once (accepted == N, no duplicate, one
  provider id per message), and both hosts took part;
- the account's `max_mt_per_second` in every sliding second of arrivals at the SMSC;
- the account's `max_binds` at every instant: the simulator refuses any bind past it
  (every bind counts: the SMS process's receivers too), and its peak is sampled while
  sending.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path

import pytest

from midsourcing import auth
from midsourcing.client import MidClient
from midsourcing.schemas import DeliveryCreate, Message
from smsmta.settings import MarketingAccount
from smsmta.simulator import SimulatorConfig, Smsc
from tests.e2e.test_midsourcing_e2e import wait_http
from tests.midsourcing.conftest import free_port
from tests.mta.test_mta import max_in_any_second
from tests.sms_process.conftest import SmsHarness, sms, sms_config  # noqa: F401

PASSWORD = "scale-out operator password"
COUNT = 3_000
CAP = 300  # MT/s for the account, whatever the hosts
MAX_BINDS = 5  # every bind of the login: 2 receivers + 3 transmitters (hosts want 2 x 2)
CONNECTIONS = 2  # binds per child (and receiver binds of the SMS process)
TRANSMITTERS = MAX_BINDS - CONNECTIONS
CHUNK = 500


def host_config(smpp_port: int, host_id: str, mid_port: int) -> str:
    config = json.loads(
        sms_config(
            smpp_port,
            connections=CONNECTIONS,
            window=20,
            mta={"children": 1},
        )
    )
    config["host_id"] = host_id
    config["mid"] = {"listen": "127.0.0.1", "port": mid_port, "metrics_port": None}
    throughput = config["accounts"][0]["throughput"]
    throughput.update(max_mt_per_second=CAP, max_binds=MAX_BINDS)
    return json.dumps(config, indent=2)


def mid_client(url: str) -> MidClient:
    return MidClient(MarketingAccount(name="sms", mid_url=url, operator="ops", password=PASSWORD))


async def push(url: str, name: str, first: int, count: int) -> int:
    """One delivery through one mid server, held (paused) until the hosts are bound."""
    async with mid_client(url) as client:
        delivery = await client.create_delivery(
            DeliveryCreate(marketing_account="sms", marketing_delivery_id=name)
        )
        await client.action(delivery.id, "pause")
        for start in range(first, first + count, CHUNK):
            chunk = [
                Message(id=i + 1, to=f"+3361{i:07d}", text=f"Scale-out message {i}")
                for i in range(start, min(start + CHUNK, first + count))
            ]
            result = await client.push(delivery.id, chunk)
            assert result.inserted == len(chunk)
        await client.complete(delivery.id, count)
        return delivery.id


@pytest.mark.timeout(120)
async def test_two_hosts_send_exactly_once_within_the_rate_cap_and_max_binds(
    sms: SmsHarness,  # noqa: F811
    tmp_path: Path,
) -> None:
    # the simulator refuses any bind past max_binds: transmitters and receivers together
    config = SimulatorConfig(port=0, seed=11, max_binds=MAX_BINDS)
    began = time.monotonic()
    marks: dict[str, float] = {}
    async with Smsc(config) as smsc:
        times: list[float] = []
        smsc.on_submit = lambda pdu, now, status: times.append(now)
        paths = []
        for host_id in ("host-a", "host-b"):
            path = tmp_path / f"{host_id}.yaml"
            path.write_text(host_config(smsc.port, host_id, free_port()))
            paths.append(path)
        configs = [json.loads(path.read_text()) for path in paths]
        # every process starts at once; the hosts' MTAs find the deliveries paused
        sms_process = await sms.start_service("sms-process", paths[0])
        mids = [await sms.start_service("mid", path, tag=f"-{path.stem}") for path in paths]
        mtas = [await sms.start_mta(path) for path in paths]
        services = [sms_process, *mids]
        await asyncio.to_thread(
            auth.add_operator, sms.dsn, "ops", "Operations", PASSWORD, ["ADMINISTRATION"]
        )
        urls = [f"http://127.0.0.1:{c['mid']['port']}" for c in configs]
        for url, mid in zip(urls, mids, strict=True):
            await wait_http(f"{url}/healthz", mid)
        # half the messages through each mid server, the two pushes at once
        half = COUNT // 2
        deliveries = await asyncio.gather(
            push(urls[0], "scale-a", 0, half), push(urls[1], "scale-b", half, COUNT - half)
        )

        async def bound() -> bool:
            for mta in mtas:
                if mta.process.returncode is not None:
                    pytest.fail(f"an MTA exited:\n{mta.log()[-3000:]}")
            active = smsc.stats["binds_active"]
            leases = await sms.scalar("SELECT count(DISTINCT host_id) FROM mid.mta_lease")
            return active["tx"] == TRANSMITTERS and active["rx"] == CONNECTIONS and leases == 2

        marks["pushed"] = time.monotonic() - began
        await sms.until(bound, 40, "both hosts up, the binds at max_binds", *services)
        marks["bound"] = time.monotonic() - began

        most_binds = 0
        hosts_seen: set[str] = set()

        async def watch_binds() -> None:
            nonlocal most_binds
            while True:
                most_binds = max(most_binds, smsc.stats["binds_active"]["tx"])
                await asyncio.sleep(0.02)

        async def all_sent() -> bool:
            rows = await sms.query(
                "SELECT split_part(lease_owner, ':', 1) FROM mid.broad_log "
                "WHERE status = 'sending' GROUP BY 1"
            )
            hosts_seen.update(host for (host,) in rows)
            statuses = await sms.statuses()  # receipts turn sent into delivered meanwhile
            return statuses.get("sent", 0) + statuses.get("delivered", 0) == COUNT

        watcher = asyncio.create_task(watch_binds())
        # Arrival times are stamped in this process: a collection pause here would stamp a
        # backlog at once, a stall of the receiver, not a burst of the senders.
        gc.disable()
        try:
            async with mid_client(urls[1]) as client:  # either mid server sees both
                for delivery_id in deliveries:
                    await client.action(delivery_id, "resume")
            await sms.until(all_sent, 60, f"{COUNT:,} messages sent", *services)
            marks["sent"] = time.monotonic() - began
        finally:
            gc.enable()
            watcher.cancel()
        # SIGTERM to every process at once: each drains and exits 0
        codes = await asyncio.gather(*(process.stop() for process in [*mtas, *services]))
        for code, process in zip(codes, [*mtas, *services], strict=True):
            assert code == 0, process.log()[-3000:]

        marks["stopped"] = time.monotonic() - began
        print("scale-out test, seconds since start:", {k: round(v, 1) for k, v in marks.items()})
        times.sort()
        print(
            f"scale-out test: worst second {max_in_any_second(times)} (cap {CAP}), mean "
            f"{(len(times) - 1) / (times[-1] - times[0]):.0f} MT/s, most tx binds {most_binds}"
        )
        # exactly once, and both hosts took part
        assert smsc.counters.accepted == COUNT
        assert smsc.counters.duplicates == 0
        [(rows, ids, messages)] = await sms.query(
            "SELECT count(*), count(DISTINCT provider_id), count(DISTINCT broad_log_id) "
            "FROM mid.provider_msg_id"
        )
        assert rows == ids == messages == COUNT
        assert hosts_seen == {"host-a", "host-b"}
        # the cap in every sliding second at the SMSC
        assert len(times) == COUNT
        assert max_in_any_second(times) <= CAP
        # max_binds at every instant: never refused, reached while sending
        assert smsc.counters.binds_refused == 0
        assert most_binds == TRANSMITTERS
