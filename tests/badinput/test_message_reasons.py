"""Per-message bad input: each unsendable message fails alone, with its reason; the rest go.

A delivery is pushed through the real mid API (in this process) and sent by the real
`smsmta mta` to the simulator. The account maps GSM7 only (no UCS-2) and sends the full
number as typed; the delivery allows 2 SMS per message. A number that does not fit
SMPP's 20-character destination_addr as the account sends it is refused at the push,
naming the message. Among good messages, one holds an emoji (no encoding of the account
takes it), one needs 3 parts: each ends `failed` (hard) with a reason that says what
(the character and its position, the part count), and every other message of the same
chunk is sent.
Per-row reasons of a CSV import and per-field refusals of an API chunk are tested in
tests/midsourcing (test_recipients.py, test_api.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from midsourcing import auth
from midsourcing.server import uvicorn_config
from smsmta.settings import MidConfig
from smsmta.simulator import Smsc
from tests.midsourcing.conftest import OPS_PASSWORD, free_port
from tests.mta.conftest import Harness, harness, mid_config, smsc  # noqa: F401

BAD = {
    3: ("Smile \U0001f642 please", ["\U0001f642", "6"]),  # the emoji, at index 6
    5: ("A" * 400, ["3", "2"]),  # 3 parts needed, 2 allowed
}
COUNT = 10
TOO_LONG = "+12345678901234567890"  # 21 characters: over destination_addr's 20


def to(index: int) -> str:
    return f"+3361234{index:04d}"


def text(index: int) -> str:
    return BAD[index][0] if index in BAD else f"Hello number {index}"


@pytest.fixture
def api(harness: Harness) -> Iterator[tuple[str, Any]]:  # noqa: F811
    """Start the mid API on the harness's database; yields (url, config writer)."""
    started: list[uvicorn.Server] = []
    threads: list[threading.Thread] = []

    def start(config: MidConfig) -> str:
        server = uvicorn.Server(uvicorn_config(config, harness.dsn))
        thread = threading.Thread(target=server.run, name="mid-api", daemon=True)
        thread.start()
        started.append(server)
        threads.append(thread)
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the mid API did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{config.mid.port}"

    try:
        yield harness.dsn, start
    finally:
        for server in started:
            server.should_exit = True
        for thread in threads:
            thread.join(timeout=30)


@pytest.mark.timeout(120)
async def test_each_unsendable_message_fails_alone_with_its_reason(
    harness: Harness,  # noqa: F811
    smsc: Smsc,  # noqa: F811
    api: tuple[str, Any],
) -> None:
    dsn, start = api
    document = json.loads(
        mid_config(
            smsc.port,
            children=1,
            connections=1,
            smsc={
                "encoding_mapping": [{"data_coding": 0, "encoding": "gsm7"}],
                "send_full_phone_number": True,
            },
        )
    )
    document["mid"] = {"listen": "127.0.0.1", "port": free_port(), "metrics_port": None}
    path, config = harness.write_config(json.dumps(document))
    auth.add_operator(dsn, "ops", "Operations", OPS_PASSWORD, ["ADMINISTRATION"])
    url = await asyncio.to_thread(start, config)
    async with httpx.AsyncClient(base_url=url, auth=("ops", OPS_PASSWORD), timeout=30) as client:
        created = await client.post(
            "/api/v1/deliveries",
            json={
                "marketing_account": "sms",
                "marketing_delivery_id": "bad-input",
                "options": {"max_parts": 2},
            },
        )
        assert created.status_code == 201, created.text
        delivery = created.json()["id"]
        chunk = [{"id": i, "to": to(i), "text": text(i)} for i in range(1, COUNT + 1)]
        # a number that cannot be canonical (20 digits): refused alone at the push, naming
        # it; the rest of the chunk is queued (issue 13)
        unsendable = [*chunk[:6], {"id": 99, "to": TOO_LONG, "text": "x"}, *chunk[6:]]
        refused = await client.post(
            f"/api/v1/deliveries/{delivery}/messages", json={"messages": unsendable}
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["errors"][0]
        assert (error["where"], error["recipient_index"]) == ("body.messages[6].to", 6)
        assert TOO_LONG in error["message"] and "at most 15" in error["message"]
        assert refused.json()["chunk"]["inserted"] == COUNT
        pushed = await client.post(
            f"/api/v1/deliveries/{delivery}/messages", json={"messages": chunk}
        )
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["duplicates"] == COUNT
    mta = await harness.start_mta(path)

    async def final() -> bool:
        rows = await harness.query(
            "SELECT count(*) FROM mid.broad_log WHERE status IN ('sent', 'failed')"
        )
        return rows[0][0] >= COUNT

    await harness.wait_until(final, 90, f"{COUNT} messages final", mta)
    rows = await harness.query(
        "SELECT marketing_message_id, status::text, failure_type::text, failure_reason "
        "FROM mid.broad_log ORDER BY marketing_message_id"
    )
    assert await mta.stop() == 0
    outcomes = {row[0]: row[1:] for row in rows}
    print("\n" + "\n".join(f"{i}: {outcome}" for i, outcome in outcomes.items()))
    for index in range(1, COUNT + 1):
        status, failure_type, reason = outcomes[index]
        if index not in BAD:
            assert (status, reason) == ("sent", None), (index, outcomes[index])
            continue
        assert (status, failure_type) == ("failed", "hard"), (index, outcomes[index])
        for said in BAD[index][1]:
            assert said in (reason or ""), (index, reason)
    assert smsc.counters.accepted == COUNT - len(BAD)  # nothing unsendable reached the SMSC


def test_the_mta_fails_a_message_whose_pdu_cannot_be_encoded_instead_of_dying() -> None:
    from mta.submit import DeliveryOptions, MtBuilder
    from smsmta.smpp.codec import encode
    from smsmta.smpp.text import TextError

    document = json.loads(mid_config(2775, smsc={"send_full_phone_number": True}))
    account = MidConfig.model_validate(document).accounts[0]
    # refused where the sender fails a message alone (TextError: a hard failure with this
    # reason), not by the codec on the wire, which would kill the child's sending task
    with pytest.raises(TextError, match=r"destination_addr '\+?\d+' is \d+ characters; SMPP"):
        MtBuilder(account).build(1, TOO_LONG, "Hello", DeliveryOptions(id=1))
    for pdu in MtBuilder(account).build(1, "+33612345678", "Hello", DeliveryOptions(id=1)):
        encode(pdu.with_sequence_number(1))  # a valid number still encodes
