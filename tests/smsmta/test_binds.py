"""Every bind counted (smsmta.binds): max_binds checked at load, the receivers' slots
reserved, refused binds counted by reason and logged once an outage."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from prometheus_client import REGISTRY
from sqlalchemy import URL

from smsmta import binds, settings
from smsmta.accounts import sync_accounts
from smsmta.db.engine import libpq_dsn
from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.aio import BaseHandler, BindKind, SmppClient, SmppConnection


def mid_file(
    tmp_path: Path, *, mode: str, connections: int, max_binds: int, receiver: str = ""
) -> Path:
    path = tmp_path / "mid.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        kind: mid
        accounts:
          - name: ops_sms
            operator: ops
            connection:
              mode: {mode}
              server: 127.0.0.1
              port: 2775
              system_id: alpha
              password: s3cr3t
              connections: {connections}
            throughput:
              max_binds: {max_binds}
        """)
        + receiver
    )
    return path


OTHER_RECEIVER = """\
    receiver:
      server: 127.0.0.1
      port: 2775
      system_id: alpha-rx
      password: s3cr3t
"""


@pytest.mark.parametrize(("connections", "max_binds"), [(1, 1), (2, 2), (3, 2)])
def test_max_binds_that_leaves_the_mta_no_bind_is_refused(
    tmp_path: Path, connections: int, max_binds: int
) -> None:
    path = mid_file(tmp_path, mode="tx_rx", connections=connections, max_binds=max_binds)
    with pytest.raises(settings.ConfigError) as caught:
        settings.load(path)
    [issue] = caught.value.issues
    assert issue.account == "ops_sms" and issue.field == "throughput.max_binds"
    assert issue.line == 13  # the max_binds line
    assert f"at least {connections + 1}" in issue.message
    assert "receiver" in issue.message


@pytest.mark.parametrize(
    ("mode", "connections", "max_binds", "receiver", "mta_slots"),
    [
        ("trx", 1, 1, "", range(0, 1)),  # the transceiver receives: nothing reserved
        ("tx_rx", 1, 2, "", range(1, 2)),  # slot 0 is the receiver's
        ("tx_rx", 2, 5, "", range(2, 5)),
        ("tx_rx", 1, 1, OTHER_RECEIVER, range(0, 1)),  # the receiver counts on its own login
    ],
)
def test_the_mta_takes_only_the_slots_the_receivers_leave(
    tmp_path: Path, mode: str, connections: int, max_binds: int, receiver: str, mta_slots: range
) -> None:
    path = mid_file(
        tmp_path, mode=mode, connections=connections, max_binds=max_binds, receiver=receiver
    )
    config = settings.load(path)
    assert isinstance(config, settings.MidConfig)
    assert binds.mta_slots(config.accounts[0]) == mta_slots


class Watched(BaseHandler):
    """A handler that reports its bind failures as the services' handlers do."""

    def __init__(self, watch: binds.BindWatch) -> None:
        self.watch = watch
        self.bound = asyncio.Event()

    def on_bind_failed(self, client: SmppClient, error: BaseException) -> None:
        self.watch.failed(error)

    def on_bound(self, conn: SmppConnection) -> None:
        self.watch.bound()
        self.bound.set()


def refused(account: str, reason: str) -> float:
    labels = {"account": account, "reason": reason}
    return REGISTRY.get_sample_value("smsmta_binds_refused_total", labels) or 0.0


async def test_refused_binds_are_counted_by_status_and_logged_once_an_outage(
    tmp_path: Path,
) -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1, max_binds=1, system_id="alpha",
                                    password="s3cr3t")) as smsc:  # fmt: skip
        path = mid_file(tmp_path, mode="tx_rx", connections=1, max_binds=0)
        path.write_text(path.read_text().replace("port: 2775", f"port: {smsc.port}"))
        config = settings.load(path)
        assert isinstance(config, settings.MidConfig)
        account = config.accounts[0].model_copy(
            update={"throughput": config.accounts[0].throughput.model_copy(
                update={"reconnect_delay": 0.05})}
        )  # fmt: skip
        account_settings = binds.bind_settings(account, BindKind.TRANSMITTER)
        holder = SmppClient(account_settings, BaseHandler())  # the contract's one bind
        holder_task = asyncio.create_task(holder.run())
        async with asyncio.timeout(5):
            while not holder.is_bound:
                await asyncio.sleep(0.01)
        before = refused("ops_sms", "ESME_RBINDFAIL")
        handler = Watched(binds.BindWatch("ops_sms", "alpha", "transmitter"))
        client = SmppClient(account_settings, handler)
        events: list[dict[str, Any]]
        with structlog.testing.capture_logs() as events:
            task = asyncio.create_task(client.run())
            async with asyncio.timeout(10):
                while client.reconnects < 4:
                    await asyncio.sleep(0.01)
            await holder.stop(0)  # the bind is free again: the next attempt binds
            await asyncio.wait_for(handler.bound.wait(), 5)
            await client.stop(0)
            await asyncio.gather(task, holder_task)
        assert refused("ops_sms", "ESME_RBINDFAIL") - before >= 4
        loud = [e for e in events if e["log_level"] in ("warning", "error", "info")]
        outage = [e for e in loud if e["event"].startswith("binds.")]
        assert [e["event"] for e in outage] == ["binds.refused", "binds.recovered"]
        assert outage[0]["account"] == "ops_sms" and outage[0]["status"] == "ESME_RBINDFAIL"
        assert outage[1]["failed_attempts"] >= 4
        assert not [e for e in loud if e["event"] == "smpp.bind_failed"]  # repeats silent


# --- the go-live check's test binds ---------------------------------------------------


async def test_the_go_live_check_takes_a_slot_a_bind_or_says_every_slot_is_held(
    migrated_db_url: URL,
) -> None:
    from smsmta import golive

    dsn = libpq_dsn(migrated_db_url)
    # the receipt comes 0.5 s after the submit: the slots are read while the binds are up
    async with Smsc(SimulatorConfig(port=0, seed=2, dlr_delay_ms=500)) as smsc:
        account = settings.Account.model_validate(
            {
                "name": "op_acme",
                "operator": "op",
                "connection": {
                    "mode": "trx",
                    "server": "127.0.0.1",
                    "port": smsc.port,
                    "system_id": "smsmta",
                    "password": "secret",
                },
                "throughput": {"max_binds": 2},
            }
        )
        config = settings.MidConfig(kind="mid", accounts=(account,))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            account_id = (await sync_accounts(conn, config))[account.name]
            # a running MTA child holds both slots
            child = binds.Lease("host-a:4242:0", "host-a", 60)
            await child.register(conn)
            held = await binds.update_slots(conn, account_id, child.owner, range(2), 2)
            assert held == [0, 1]
            report = await golive.run_check(
                account, "+33612345678", wait=5, slots=binds.TestSlots(dsn, account, "h", 60)
            )
            steps = {step.name: step for step in report.steps}
            assert not report.ok and steps["bind slots"].status == golive.FAIL
            assert "host-a:4242:0 (2)" in steps["bind slots"].summary
            assert "exceed the contract" in steps["bind slots"].summary
            assert smsc.counters.binds_total == 0  # it never bound past the contract
            # one slot frees: the check takes it for its transceiver, and gives it back
            await binds.update_slots(conn, account_id, child.owner, range(2), 1)
            seen: list[Any] = []
            report = await golive.run_check(
                account,
                "+33612345678",
                wait=5,
                slots=binds.TestSlots(dsn, account, "h", 60),
                on_step=lambda step: seen.append(
                    (step.name, asyncio.ensure_future(slot_owners(dsn)))
                ),
            )
            assert report.ok, [s.as_json() for s in report.steps if s.status != golive.PASS]
            during = {name: await owners for name, owners in seen}
            assert any(o.startswith("go-live:") for o in during["bind transceiver"])
            assert await slot_owners(dsn) == [child.owner]


async def slot_owners(dsn: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute("SELECT owner FROM mid.bind_slot ORDER BY slot")
        return [row[0] for row in await cursor.fetchall()]
