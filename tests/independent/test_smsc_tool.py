"""The independent SMSC itself (smsc.js), driven over a raw socket with our codec: the
behaviours the promise scenarios rely on, so that a scenario that fails says something
about smsmta, not about the tool: bind refusal beyond max_binds with the chosen status,
hex ids, TLV-only receipts, throttling above its window, the MO command, the records,
dropping links, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smsmta.smpp import codec
from smsmta.smpp.constants import Tag
from smsmta.smpp.pdu import BindTransceiver, DeliverSm, Pdu, SubmitSm
from tests.independent.conftest import independent_smsc

pytestmark = pytest.mark.timeout(30)


class Client:
    """One SMPP connection: send a PDU, read the next one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = codec.Framer()

    async def send(self, pdu: Pdu) -> None:
        self.writer.write(codec.encode(pdu))
        await self.writer.drain()

    async def read(self) -> Pdu:
        while (frame := self.framer.next_frame()) is None:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                raise ConnectionError("closed by the SMSC")
            self.framer.feed(data)
        return codec.decode(frame)


async def client(port: int) -> Client:
    return Client(*await asyncio.open_connection("127.0.0.1", port))


def submit(sequence: int, destination: str) -> SubmitSm:
    return SubmitSm(
        sequence_number=sequence,
        source_addr="38000",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=destination,
        registered_delivery=1,
        short_message=b"hello",
        tlvs=((0x1403, b"svc"),),
    )


async def test_the_independent_smsc_does_what_the_scenarios_rely_on(
    node_smsc: str, tmp_path: Path
) -> None:
    options = {
        "max_binds": 1,
        "bind_refusal": "ESME_RALYBND",
        "resp_id_format": "hex",
        "text_id_format": "none",
        "id_start": 26,
        "throttle_window": 2,
        "resp_delay_ms": 200,
        "dlr_delay_ms": 10,
    }
    async with independent_smsc(node_smsc, tmp_path, **options) as smsc:
        first = await client(smsc.smpp_port)
        await first.send(BindTransceiver(sequence_number=1, system_id="login", password="pw"))
        assert (await first.read()).command_status == 0
        second = await client(smsc.smpp_port)
        await second.send(BindTransceiver(sequence_number=1, system_id="login", password="pw"))
        assert (await second.read()).command_status == 0x05  # ESME_RALYBND: over max_binds

        for sequence in (2, 3, 4):  # the third is one over the SMSC's window of 2
            await first.send(submit(sequence, f"3361000000{sequence}"))
        answers = {}
        while len(answers) < 3:
            pdu = await first.read()
            answers[pdu.sequence_number] = pdu
        assert answers[4].command_status == 0x58  # ESME_RTHROTTLED, at once
        assert [answers[n].message_id for n in (2, 3)] == ["1A", "1B"]  # 26, 27 in hex

        receipts = []
        while len(receipts) < 2:
            pdu = await first.read()
            assert isinstance(pdu, DeliverSm)
            await first.send(pdu.make_resp())
            receipts.append(pdu)
        receipt = next(r for r in receipts if r.tlv(Tag.receipted_message_id) == "1A")
        assert receipt.esm_class == 0x04
        assert receipt.tlv(Tag.message_state) == 2
        assert receipt.short_message.startswith(b"sub:001 ")  # TLV only: no id in the text
        assert b"stat:DELIVRD" in receipt.short_message

        await smsc.mo("+33699999999", "38000", "STOP", system_id="login", source_addr_ton=0)
        mo = await first.read()
        assert (mo.esm_class, mo.source_addr, mo.source_addr_ton) == (0, "+33699999999", 0)
        assert (mo.destination_addr, mo.short_message) == ("38000", b"STOP")
        await first.send(mo.make_resp())

        stats = await smsc.stats()
        assert stats["binds"]["login"] == {"current": 1, "max": 1, "accepted": 1, "refused": 1}
        assert await smsc.drop() == 2
        with pytest.raises(ConnectionError):
            await first.read()

        submits = smsc.records("submit")
        accepted = [s for s in submits if s["status"] == 0]
        assert [s["message_id"] for s in accepted] == ["1A", "1B"]
        assert accepted[0]["destination_addr"] == "33610000002"
        assert (accepted[0]["dest_addr_ton"], accepted[0]["registered_delivery"]) == (1, 1)
        assert accepted[0]["short_message_hex"] == b"hello".hex()
        assert accepted[0]["tlvs"] == {"0x1403": b"svc".hex()}
        assert [s["throttled_by"] for s in submits if s["status"] == 0x58] == ["window"]
        assert [b["status"] for b in smsc.records("bind")] == [0, 0x05]
        assert len(smsc.records("receipt")) == 2 and len(smsc.records("mo")) == 1
        await smsc.stop()
        assert smsc.process.returncode == 0
        assert smsc.records()[-1]["ev"] == "stop"
