"""Phone numbers and message texts stay out of the logs and the message log (issue 14, item 8).

A full run of the real `smsmta mta` and `smsmta sms-process` against the simulator: MTs
to known numbers with a known text, a share of them failing with receipts whose `Text:`
preview repeats the text, STOP MOs (twice from one sender: the reply limit logs it, naming
the sender), with the verbose SMPP trace on (every PDU in the log). By default no full
number and no text reach either service's log, the message log
(`mid.broad_log_msg.first_text`) or the messages' failure reasons; with
`logging.show_personal_data: true` (debugging) they do.
"""

from __future__ import annotations

import json

import pytest

from smsmta.simulator import SimulatorConfig, Smsc
from tests.sms_process.conftest import SmsHarness, sms, sms_config  # noqa: F401

COUNT = 20
SECRET_TEXT = "Your code ZX8147 for the sale"
MO_SENDER = "+33699887766"
RULES = [{"keyword": "STOP", "short_code": "38000", "reply": "Bye.", "action": "blacklist"}]


def number(i: int) -> str:
    return f"+3361{i:07d}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("show", [False, True], ids=["default", "show_personal_data"])
async def test_a_full_run_writes_no_number_and_no_text_unless_asked(
    sms: SmsHarness,  # noqa: F811
    show: bool,
) -> None:
    async with Smsc(SimulatorConfig(port=0, seed=5, fail_rate=0.5)) as smsc:
        document = json.loads(sms_config(smsc.port, auto_replies=RULES))
        document["accounts"][0]["connection"]["verbose_trace"] = True  # every PDU logged
        if show:  # the default is to mask: no setting at all
            document["logging"]["show_personal_data"] = True
        path, config = sms.write_config(json.dumps(document))
        await sms.enqueue(config, COUNT, text=lambda i: SECRET_TEXT, address=number)
        process = await sms.start_sms_process(path)
        mta = await sms.start_mta(path)
        await smsc.inject_mo(MO_SENDER, "38000", "STOP ZX8147")
        await smsc.inject_mo(MO_SENDER, "38000", "STOP ZX8147")

        async def done() -> bool:
            statuses = await sms.statuses()
            stored = await sms.scalar("SELECT count(*) FROM mid.in_sms")
            outbox = await sms.scalar("SELECT count(*) FROM mid.reply_outbox")
            finished = statuses.get("delivered", 0) + statuses.get("failed", 0)
            return finished == COUNT and stored == 2 and outbox == 0

        await sms.until(done, 60, "every MT final, the MOs handled", process, mta)
        assert await mta.stop() == 0
        assert await process.stop() == 0
    failed = await sms.scalar("SELECT count(*) FROM mid.broad_log WHERE status = 'failed'")
    assert failed > 0  # the message log has entries to look at
    message_log = " ".join(
        row[0] for row in await sms.query("SELECT first_text FROM mid.broad_log_msg")
    )
    reasons = " ".join(
        row[0]
        for row in await sms.query(
            "SELECT failure_reason FROM mid.broad_log WHERE failure_reason IS NOT NULL"
        )
    )
    logs = process.log() + mta.log()
    numbers = [number(i) for i in range(COUNT)] + [MO_SENDER]
    if not show:
        for where, text in (("logs", logs), ("message log", message_log), ("reasons", reasons)):
            for n in numbers:
                assert n.lstrip("+") not in text, f"{n} in the {where}"
            assert "ZX8147" not in text, f"the text in the {where}"
        assert "Text:<20 characters>" in message_log  # the receipt's preview, as a length
        assert "sms_process.auto_replies_rate_limited" in logs  # the line naming the sender
        assert MO_SENDER[:4] + "******66" in logs
    else:
        assert SECRET_TEXT[:20] in message_log and SECRET_TEXT[:20] in reasons
        assert MO_SENDER in logs and number(0).lstrip("+") in logs  # the trace's submit_sm
