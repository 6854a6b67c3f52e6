"""The real `smsmta sms-process` against the simulator: MO, auto-replies, blacklists, the
instance lock, and receipts of MTs sent by the real `smsmta mta`."""

from __future__ import annotations

import os
import signal

import pytest

from smsmta.simulator import OutcomePicker, SimulatorConfig, Smsc
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.text import decode_short_message
from tests.sms_process.conftest import SmsHarness, sms_config

pytestmark = pytest.mark.timeout(120)

RULES = [
    {"keyword": "STOP", "short_code": "38000", "reply": "Bye.", "action": "blacklist"},
    {"keyword": "start", "short_code": "38000", "reply": "Welcome back.", "action": "unblacklist"},
    {"keyword": "INFO", "short_code": "", "reply": "", "action": "none"},
]


async def test_stop_blacklists_for_that_short_code_and_start_lifts_it(sms: SmsHarness) -> None:
    submits: list[Pdu] = []
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        smsc.on_submit = lambda pdu, now, status: submits.append(pdu)
        path, _ = sms.write_config(sms_config(smsc.port, auto_replies=RULES))
        process = await sms.start_sms_process(path)
        mta = await sms.start_mta(path)  # the replies go out on the MTA's binds

        async def blacklisted() -> list[tuple]:
            return await sms.query("SELECT short_code, address FROM mid.short_code_blacklist")

        await smsc.inject_mo("+33611111111", "38000", "  Stop! please")
        await smsc.inject_mo("+33622222222", "38001", "STOP")  # no rule for that short code

        async def stop_handled() -> bool:
            return bool(await blacklisted()) and len(submits) == 1

        await sms.until(stop_handled, 20, "STOP blacklisted and answered", process)
        assert await blacklisted() == [("38000", "+33611111111")]
        reply = submits[0]
        assert reply.registered_delivery == 0
        assert (reply.source_addr, reply.destination_addr) == ("38000", "33611111111")
        assert reply.dest_addr_ton == 1  # the MO's TON, mirrored
        assert decode_short_message(reply.short_message, reply.data_coding, udhi=False).text == (
            "Bye."
        )

        await smsc.inject_mo("+33611111111", "38000", "start")

        async def lifted() -> bool:
            return not await blacklisted() and len(submits) == 2

        await sms.until(lifted, 20, "START unblacklisted and answered", process)
        rows = await sms.query(
            "SELECT source_addr, destination_addr, text, keyword FROM mid.in_sms ORDER BY id"
        )
        assert rows == [
            ("+33611111111", "38000", "  Stop! please", "STOP"),
            ("+33622222222", "38001", "STOP", "STOP"),
            ("+33611111111", "38000", "start", "START"),
        ]
        assert await mta.stop() == 0
        assert await process.stop() == 0
    assert "sms_process.stopped" in process.log()


async def test_mo_in_every_coding_and_long_ones_reassembled(sms: SmsHarness) -> None:
    long_text = "Ünïcødé 🙂 " * 20  # UCS-2, several parts
    async with Smsc(SimulatorConfig(port=0, seed=2)) as smsc:
        path, _ = sms.write_config(sms_config(smsc.port))
        process = await sms.start_sms_process(path)
        assert await smsc.inject_mo("+33633333333", "38000", long_text) > 1
        await smsc.inject_mo("+33633333333", "38000", "Crème brûlée", data_coding=3)
        await smsc.inject_mo("+33633333333", "38000", "Plain GSM {text}", data_coding=0)
        await smsc.inject_mo("+33633333333", "38000", "IA5 text", data_coding=1)

        async def stored() -> bool:
            return await sms.scalar("SELECT count(*) FROM mid.in_sms") == 4

        await sms.until(stored, 20, "four MOs stored", process)
        rows = await sms.query("SELECT text, data_coding, parts FROM mid.in_sms ORDER BY id")
        texts = {text: (coding, parts) for text, coding, parts in rows}
        assert texts[long_text][0] == 8 and texts[long_text][1] > 1
        assert texts["Crème brûlée"] == (3, 1)
        assert texts["Plain GSM {text}"] == (0, 1)
        assert texts["IA5 text"] == (1, 1)
        assert await sms.scalar("SELECT count(*) FROM mid.inbox") == 0
        assert await process.stop() == 0


async def test_a_second_sms_process_refuses_to_start(sms: SmsHarness) -> None:
    async with Smsc(SimulatorConfig(port=0)) as smsc:
        path, _ = sms.write_config(sms_config(smsc.port))
        first = await sms.start_sms_process(path)
        second = await sms.start_service("sms-process", path, tag="-second")
        code = await second.process.wait()
        assert code == 1
        assert "another SMS process is running against this database" in second.log()
        assert "smsmta sms-process" in second.log()  # names the holder
        assert first.process.returncode is None
        assert await first.stop() == 0


def expected_failures(seed: int, fail_rate: float, count: int) -> int:
    config = SimulatorConfig(seed=seed, fail_rate=fail_rate)
    picker = OutcomePicker(fail_rate, config.dlr_failure_stats, seed)
    return sum(1 for _ in range(count) if picker.pick())


async def run_mts(
    sms: SmsHarness,
    smsc: Smsc,
    count: int,
    *,
    smsc_settings: dict | None = None,
    sms_process: dict | None = None,
) -> tuple[int, object, object]:
    path, config = sms.write_config(
        sms_config(smsc.port, connections=2, smsc=smsc_settings, sms_process=sms_process)
    )
    delivery_id = await sms.enqueue(config, count)
    process = await sms.start_sms_process(path)
    mta = await sms.start_service("mta", path)
    return delivery_id, process, mta


async def finals(sms: SmsHarness) -> dict[str, int]:
    return await sms.statuses()


@pytest.mark.timeout(180)
async def test_receipts_of_ten_thousand_mts_all_reconciled(sms: SmsHarness) -> None:
    count, seed, fail_rate = 10_000, 11, 0.2
    async with Smsc(SimulatorConfig(port=0, seed=seed, fail_rate=fail_rate)) as smsc:
        delivery_id, process, mta = await run_mts(sms, smsc, count)

        async def all_final() -> bool:
            s = await finals(sms)
            return s.get("delivered", 0) + s.get("failed", 0) == count

        await sms.until(all_final, 150, "every message delivered or failed", process, mta)
        assert await mta.stop() == 0  # type: ignore[attr-defined]
        assert await process.stop() == 0  # type: ignore[attr-defined]
    failures = expected_failures(seed, fail_rate, count)
    assert smsc.counters.accepted == count
    statuses = await finals(sms)
    assert statuses == {"delivered": count - failures, "failed": failures}
    [(delivered, hard, soft)] = await sms.query(
        "SELECT delivered, failed_hard, failed_soft FROM mid.delivery WHERE id = %s", delivery_id
    )
    assert (delivered, hard, soft) == (count - failures, failures, 0)
    results = dict(await sms.query("SELECT result::text, count(*) FROM mid.receipt GROUP BY 1"))
    assert results == {"applied": count}
    keys = dict(await sms.query("SELECT key, count FROM mid.broad_log_msg"))
    assert sum(keys.values()) == failures
    assert set(keys) <= {
        "SR Sim UNDELIV 001|#MESSAGE#",
        "SR Sim REJECTD 002|#MESSAGE#",
        "SR Sim EXPIRED 003|#MESSAGE#",
    }


async def test_receipts_before_the_submit_responses_still_reconcile(sms: SmsHarness) -> None:
    count = 300
    async with Smsc(SimulatorConfig(port=0, seed=3, receipt_before_resp=True)) as smsc:
        _, process, mta = await run_mts(sms, smsc, count)

        async def all_delivered() -> bool:
            return (await finals(sms)).get("delivered", 0) == count

        await sms.until(all_delivered, 60, "every message delivered", process, mta)
        assert await mta.stop() == 0  # type: ignore[attr-defined]
        assert await process.stop() == 0  # type: ignore[attr-defined]
    # some receipts had to wait for their MT to be recorded, none was lost
    attempts = await sms.scalar("SELECT count(*) FROM mid.receipt WHERE result = 'applied'")
    assert attempts == count


@pytest.mark.parametrize("sr_format", ["hex_number", "as_is"])
async def test_hex_mt_ids(sms: SmsHarness, sr_format: str) -> None:
    count = 30  # ids 1..30: written in hex, 10..30 differ from their decimal form
    settings = {"mt_ack_id_format": "hex_number", "sr_id_format": sr_format}
    async with Smsc(SimulatorConfig(port=0, seed=4, id_format="hex")) as smsc:
        _, process, mta = await run_mts(
            sms, smsc, count, smsc_settings=settings, sms_process={"receipt_match_wait": 2}
        )

        async def settled() -> bool:
            handled = await sms.scalar("SELECT count(*) FROM mid.receipt")
            return handled == count

        await sms.until(settled, 60, "every receipt handled", process, mta)
        assert await mta.stop() == 0  # type: ignore[attr-defined]
        assert await process.stop() == 0  # type: ignore[attr-defined]
    stored = {row[0] for row in await sms.query("SELECT provider_id FROM mid.provider_msg_id")}
    assert stored == {str(n) for n in range(1, count + 1)}  # hex acks stored in decimal
    results = dict(await sms.query("SELECT result::text, count(*) FROM mid.receipt GROUP BY 1"))
    assert results == {"applied": count}
    if sr_format == "as_is":
        # The text ids ("1A") disagree with receipted_message_id read as hex ("26") from 10
        # up: the TLV decides, so every receipt lands on its own message (the text id "10"
        # would name message 10, not 16); it is counted and logged once with the fix.
        said = [line for line in process.log().splitlines() if "receipt_id_disagreement" in line]
        assert len(said) == 1, said
        assert "sr_id_format: hex_number would make the text id agree" in said[0]


@pytest.mark.timeout(180)
async def test_sigkill_during_a_receipt_storm_loses_no_receipt(sms: SmsHarness) -> None:
    count = 4000
    config = SimulatorConfig(port=0, seed=5, fail_rate=0.1, deliver_timeout_ms=2000)
    async with Smsc(config) as smsc:
        path, cfg = sms.write_config(sms_config(smsc.port, connections=2))
        await sms.enqueue(cfg, count)
        process = await sms.start_sms_process(path)
        mta = await sms.start_service("mta", path)

        async def storm_under_way() -> bool:
            return await sms.scalar("SELECT count(*) FROM mid.receipt") >= 500

        await sms.until(storm_under_way, 60, "the storm under way", process, mta)
        os.killpg(process.pid, signal.SIGKILL)
        await process.process.wait()
        restarted = await sms.start_sms_process(path, tag="-restarted")

        async def all_final() -> bool:
            s = await finals(sms)
            return s.get("delivered", 0) + s.get("failed", 0) == count

        await sms.until(all_final, 120, "every message delivered or failed", restarted, mta)
        assert await mta.stop() == 0  # type: ignore[attr-defined]
        assert await restarted.stop() == 0
    failures = expected_failures(5, 0.1, count)
    assert await finals(sms) == {"delivered": count - failures, "failed": failures}
    applied = await sms.scalar("SELECT count(*) FROM mid.receipt WHERE result = 'applied'")
    assert applied == count  # each message changed once; re-sent receipts are duplicates
