"""Auto-replies are rate-limited per (sender, short code) (issue 14, item 8).

Two auto-responders answering each other's STOP could loop: 50 STOP MOs from one sender
to one short code must give one reply (the blacklist still applied), while another sender
writing to the same short code still gets its own. The real `smsmta sms-process` and
`smsmta mta` run against the simulator; the suppressed replies are counted.
"""

from __future__ import annotations

import pytest

from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.pdu import Pdu
from tests.sms_process.conftest import SmsHarness, sms, sms_config  # noqa: F401

RULES = [{"keyword": "STOP", "short_code": "38000", "reply": "Bye.", "action": "blacklist"}]
LOOPING, OTHER = "+33611111111", "+33622222222"
REPEATS = 50


@pytest.mark.timeout(90)
async def test_fifty_stops_from_one_sender_give_one_reply_and_another_sender_its_own(
    sms: SmsHarness,  # noqa: F811
) -> None:
    submits: list[Pdu] = []
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        smsc.on_submit = lambda pdu, now, status: submits.append(pdu)
        path, _ = sms.write_config(sms_config(smsc.port, auto_replies=RULES))
        process = await sms.start_sms_process(path)
        mta = await sms.start_mta(path)
        for _ in range(REPEATS):
            await smsc.inject_mo(LOOPING, "38000", "STOP")
        await smsc.inject_mo(OTHER, "38000", "stop")

        async def all_handled() -> bool:
            stored = await sms.scalar("SELECT count(*) FROM mid.in_sms")
            outbox = await sms.scalar("SELECT count(*) FROM mid.reply_outbox")
            return stored == REPEATS + 1 and outbox == 0 and len(submits) >= 2

        await sms.until(all_handled, 60, "every STOP stored and its replies sent", process, mta)
        destinations = sorted(pdu.destination_addr for pdu in submits)
        assert destinations == ["33611111111", "33622222222"]  # one reply each
        assert await sms.query(
            "SELECT short_code, address FROM mid.short_code_blacklist ORDER BY address"
        ) == [("38000", LOOPING), ("38000", OTHER)]
        assert await mta.stop() == 0
        assert await process.stop() == 0
    log = process.log()
    # counted, and logged once for the window, never once per MO
    assert log.count("sms_process.auto_replies_rate_limited") == 1, log[-3000:]
    assert LOOPING not in log and LOOPING.lstrip("+") not in log


def test_the_limit_state_is_bounded_and_a_rolled_back_batch_leaves_no_trace() -> None:
    from sms_process.mo import ReplyLimiter

    limiter = ReplyLimiter(60.0, max_entries=100)
    for i in range(1_000):  # 1,000 senders in one window: the oldest are forgotten
        assert limiter.allow(1, f"+3361{i:07d}", "38000", 1_000.0 + i / 1_000)
        limiter.commit({1: "ops_sms"}, 1_000.0 + i / 1_000)
    assert len(limiter) == 100
    assert not limiter.allow(1, "+33610000999", "38000", 1_010.0)  # remembered: suppressed
    assert limiter.allow(1, "+33610000999", "38001", 1_010.0)  # another short code
    limiter.discard()  # that batch rolled back: its reply was never queued
    assert limiter.allow(1, "+33610000999", "38001", 1_011.0)
    limiter.commit({1: "ops_sms"}, 1_065.0)  # a window later, the old entries are dropped
    assert len(limiter) == 1
    assert limiter.allow(1, "+33610000999", "38000", 1_065.0)
