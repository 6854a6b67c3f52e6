"""The simulator against smpplib, an independent SMPP implementation (PyPI's smpplib).

smpplib's blocking client runs in a worker thread (`asyncio.to_thread`) while the simulator
runs on the test's event loop; every socket read has a timeout and the whole exchange a
deadline, so a failure cannot hang the test.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.gsm

from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.receipt import parse_annex_b

HOST = "127.0.0.1"
DEADLINE = 15.0

MESSAGES = [
    ("Hello from smpplib: GSM 7-bit @ £ é", smpplib.consts.SMPP_ENCODING_DEFAULT),
    ("Привет из smpplib, UCS-2 ✓", smpplib.consts.SMPP_ENCODING_ISO10646),
    ("A long message that smpplib splits with a UDH. " * 8, smpplib.consts.SMPP_ENCODING_DEFAULT),
]


def exchange(port: int) -> dict[str, Any]:
    """Bind as transceiver, send MESSAGES part by part, collect ids and receipts, unbind."""
    client = smpplib.client.Client(HOST, port, timeout=1, allow_unknown_opt_params=True)
    sent: list[str] = []
    receipts: list[Any] = []
    client.set_message_sent_handler(lambda pdu, **_: sent.append(pdu.message_id.decode()))
    client.set_message_received_handler(lambda pdu, **_: receipts.append(pdu))
    client.connect()
    try:
        bound = client.bind_transceiver(system_id="smsmta", password="secret")
        parts_sent = []
        for text, encoding in MESSAGES:
            parts, data_coding, esm_class = smpplib.gsm.make_parts(text, encoding)
            parts_sent.append((len(parts), data_coding, esm_class))
            for part in parts:
                client.send_message(
                    source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
                    source_addr="SMPPLIB",
                    dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                    dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                    destination_addr="33600000001",
                    short_message=part,
                    data_coding=data_coding,
                    esm_class=esm_class,
                    registered_delivery=smpplib.consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH,
                )
        total = sum(count for count, _, _ in parts_sent)
        deadline = time.monotonic() + DEADLINE
        while (len(sent) < total or len(receipts) < total) and time.monotonic() < deadline:
            try:
                client.read_once(auto_send_enquire_link=False)
            except TimeoutError:  # socket.timeout: nothing within a second, read again
                continue
        client.unbind()
    finally:
        client.disconnect()
    return {
        "bound_system_id": bound.system_id,
        "parts": parts_sent,
        "total": total,
        "sent": sent,
        "receipts": receipts,
    }


@pytest.fixture
async def sim() -> Any:
    async with Smsc(SimulatorConfig(host=HOST, port=0, dlr_delay_ms=10, seed=5)) as smsc:
        yield smsc


async def test_smpplib_transceiver_gets_ids_and_receipts(sim: Smsc) -> None:
    result = await asyncio.wait_for(asyncio.to_thread(exchange, sim.port), DEADLINE + 10)
    assert result["bound_system_id"] == b"SMSCSIM"
    gsm, ucs2, long = result["parts"]
    assert gsm == (1, smpplib.consts.SMPP_ENCODING_DEFAULT, 0)
    assert ucs2 == (1, smpplib.consts.SMPP_ENCODING_ISO10646, 0)
    assert long[0] == 3 and long[2] == smpplib.consts.SMPP_GSMFEAT_UDHI
    total = result["total"]
    assert len(result["sent"]) == total == 5
    assert len(set(result["sent"])) == total
    receipts = result["receipts"]
    assert len(receipts) == total
    by_id = {}
    for receipt in receipts:
        assert receipt.esm_class == 0x04  # SMSC delivery receipt (smpplib names no constant)
        fields = parse_annex_b(receipt.short_message.decode("ascii"))
        assert receipt.receipted_message_id.decode() == fields["id"]
        assert fields["stat"] == "DELIVRD" and receipt.message_state == 2
        assert receipt.source_addr == b"33600000001" and receipt.destination_addr == b"SMPPLIB"
        by_id[fields["id"]] = fields["text"]
    assert set(by_id) == set(result["sent"])
    # the preview: the first 20 characters, non-ASCII ones shown as "?"
    first, second, *long_parts = (by_id[message_id] for message_id in result["sent"])
    assert first == "Hello from smpplib:"  # parse_annex_b strips the value
    assert second == "?????? ?? smpplib, U"
    assert long_parts[0] == "A long message that"
    stats = sim.stats
    assert stats["submit_sm_by_status"] == {"ESME_ROK": total}
    assert stats["deliver_sm_acked"] == total and stats["malformed"] == 0
    assert stats["unbinds"] == 1


def test_socket_timeout_is_the_builtin_timeout_error() -> None:
    # exchange() catches TimeoutError for smpplib's socket.timeout: they are one class.
    assert socket.timeout is TimeoutError
