"""Every bind counted (issue 13): the real MTA and SMS process against a simulator that
refuses any bind past the contract's `max_binds`, with an auto-reply rule.

- TRX, max_binds 1: the MTA's one transceiver carries the MTs, the MO and the auto-reply
  (registered_delivery 0); the SMS process opens no bind at all.
- TX+RX, max_binds 2 on one login, two MTA children: the SMS process's receiver holds
  slot 0, one child one transmitter; the MTs flow, the receipts come back.
The simulator's `binds_refused` staying 0 proves no process ever tried a bind past the
limit; the binds seen at once are sampled too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.text import decode_short_message
from tests.sms_process.conftest import SmsHarness, sms_config

pytestmark = pytest.mark.timeout(90)

RULES = [{"keyword": "STOP", "short_code": "38000", "reply": "Bye.", "action": "blacklist"}]
MO_SENDER = "+33699999999"


def config(port: int, *, mode: str, max_binds: int, children: int, connections: int) -> str:
    document: dict[str, Any] = json.loads(
        sms_config(
            port,
            connections=connections,
            auto_replies=RULES,
            mta={"children": children, "poll_interval": 0.2},
        )
    )
    account = document["accounts"][0]
    account["connection"]["mode"] = mode
    account["throughput"]["max_binds"] = max_binds
    return json.dumps(document, indent=2)


async def sample_binds(smsc: Smsc, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], sum(smsc.stats["binds_active"].values()))
        await asyncio.sleep(0.01)


async def test_trx_one_bind_carries_mts_and_the_auto_reply(sms: SmsHarness) -> None:
    count = 500
    submits: list[Pdu] = []
    async with Smsc(SimulatorConfig(port=0, seed=5, max_binds=1)) as smsc:
        smsc.on_submit = lambda pdu, now, status: submits.append(pdu)
        path, mid = sms.write_config(
            config(smsc.port, mode="trx", max_binds=1, children=1, connections=2)
        )
        await sms.enqueue(mid, count)
        peak = [0]
        sampler = asyncio.create_task(sample_binds(smsc, peak))
        process = await sms.start_sms_process(path)
        mta = await sms.start_mta(path)

        async def some_sent() -> bool:
            return len(submits) >= 50

        await sms.until(some_sent, 30, "MTs flowing", process)
        await smsc.inject_mo(MO_SENDER, "38000", "stop")

        def replies() -> list[Pdu]:
            return [p for p in submits if p.destination_addr == MO_SENDER.lstrip("+")]

        async def done() -> bool:
            statuses = await sms.statuses()
            sent = statuses.get("sent", 0) + statuses.get("delivered", 0)
            return sent == count and len(replies()) == 1

        await sms.until(done, 40, "every MT sent and the reply out", process)
        sampler.cancel()
        assert await mta.stop() == 0
        assert await process.stop() == 0
        [reply] = replies()
        assert reply.registered_delivery == 0
        assert (reply.source_addr, reply.dest_addr_ton) == ("38000", 1)
        assert decode_short_message(reply.short_message, reply.data_coding, udhi=False).text == (
            "Bye."
        )
        assert smsc.counters.binds_refused == 0  # nobody tried a second bind
        assert peak[0] == 1
        assert smsc.counters.accepted == count + 1 and smsc.counters.duplicates == 0
        assert await sms.scalar("SELECT count(*) FROM mid.reply_outbox") == 0
        assert "receivers=0" in process.log() or '"receivers": 0' in process.log()


async def test_tx_rx_max_binds_two_leaves_one_receiver_and_one_transmitter(
    sms: SmsHarness,
) -> None:
    count = 500
    async with Smsc(SimulatorConfig(port=0, seed=6, max_binds=2)) as smsc:
        path, mid = sms.write_config(
            config(smsc.port, mode="tx_rx", max_binds=2, children=2, connections=1)
        )
        await sms.enqueue(mid, count)
        peak = [0]
        sampler = asyncio.create_task(sample_binds(smsc, peak))
        process = await sms.start_sms_process(path)
        mta = await sms.start_mta(path)

        async def delivered() -> bool:
            return (await sms.statuses()).get("delivered", 0) == count

        await sms.until(delivered, 40, "every MT sent and its receipt reconciled", process)
        slots = await sms.query("SELECT slot, owner FROM mid.bind_slot ORDER BY slot")
        sampler.cancel()
        assert await mta.stop() == 0
        assert await process.stop() == 0
        assert smsc.counters.binds_refused == 0
        assert peak[0] == 2
        assert [slot for slot, _ in slots] == [0, 1]
        assert slots[0][1].startswith("sms-process:")  # the receiver's, reserved
        assert not slots[1][1].startswith("sms-process:")
        assert smsc.counters.accepted == count and smsc.counters.duplicates == 0
