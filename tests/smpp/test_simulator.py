"""The SMSC simulator over real sockets on 127.0.0.1, driven by a small ESME built on Session.

No mocks: every test starts an `Smsc` on an ephemeral port and talks SMPP to it through
`Esme` below (asyncio streams + `smsmta.smpp.session.Session` in Role.ESME), and HTTP to its
control endpoint through `http()`.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from smsmta.simulator import (
    DEFAULT_FAILURE_STATS,
    STAT_STATES,
    OutcomePicker,
    SimulatorConfig,
    Smsc,
    cli_command,
    parse_failure_stats,
)
from smsmta.smpp.codec import encode
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.constants import EsmClass, MessageState, Tag, Ton
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    DeliverSm,
    EnquireLink,
    GenericNack,
    Pdu,
    QuerySm,
    ReplaceSm,
    SmeAddress,
    SubmitMulti,
    SubmitSm,
    Unbind,
)
from smsmta.smpp.receipt import parse_annex_b
from smsmta.smpp.session import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Response,
    Role,
    Session,
    Stray,
    Timeouts,
)
from smsmta.smpp.text import decode_short_message, parse_udh

HOST = "127.0.0.1"
TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# A minimal ESME and an HTTP client
# --------------------------------------------------------------------------------------------


class Esme:
    """One ESME connection: pipelined requests, deliver_sm recorded and answered by `answer`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.loop = asyncio.get_running_loop()
        self.session = Session(
            Role.ESME,
            window=5000,
            timeouts=Timeouts(response=30, bind=10, enquire_link_period=0, unbind=5),
        )
        self.waiters: dict[int, asyncio.Future[Pdu]] = {}
        self.deliveries: list[Pdu] = []
        self.events: list[tuple[str, Pdu]] = []  # ("resp" | "deliver" | "stray", pdu), in order
        self.errors: list[RemoteProtocolError] = []
        # Status to answer each deliver_sm with; None leaves it unanswered.
        self.answer: Callable[[Pdu], int | None] = lambda pdu: S.ESME_ROK
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    def send(self, pdu: Pdu) -> asyncio.Future[Pdu]:
        """Queue a request (call `flush` to write it); the future gets its response."""
        sequence = self.session.send(pdu, self.loop.time())
        future = self.waiters[sequence] = self.loop.create_future()
        return future

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def request(self, pdu: Pdu) -> Pdu:
        future = self.send(pdu)
        self.flush()
        return await asyncio.wait_for(future, TIMEOUT)

    def write_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                self.session.receive_data(data, self.loop.time())
                if not self._events():
                    return
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for future in self.waiters.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    def _events(self) -> bool:
        while True:
            try:
                event = self.session.next_event()
            except RemoteProtocolError as error:
                self.errors.append(error)
                if error.framing_lost:
                    return False
                continue
            if event is NEED_DATA:
                return True
            if event is CONNECTION_CLOSED:
                return False
            if isinstance(event, Response):
                self.events.append(("resp", event.pdu))
                future = self.waiters.pop(event.pdu.sequence_number, None)
                if future is not None and not future.done():
                    future.set_result(event.pdu)
            elif isinstance(event, Stray):
                self.events.append(("stray", event.pdu))
            elif isinstance(event, DeliverSm):
                self.deliveries.append(event)
                self.events.append(("deliver", event))
                status = self.answer(event)
                if status is not None:
                    self.session.send(event.make_resp(command_status=status), self.loop.time())

    async def close(self) -> None:
        self.writer.close()
        await asyncio.wait_for(self.closed.wait(), TIMEOUT)

    def abort(self) -> None:
        self.writer.transport.abort()


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def http(
    port: int, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any], bytes]:
    """One HTTP/1.1 request; (status, JSON body, head)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    if raw is None:
        payload = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body)
        payload = payload.encode() if isinstance(payload, str) else payload
        head = f"{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {len(payload)}\r\n\r\n"
        raw = head.encode() + payload
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    head, _, content = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(content), head


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

Connect = Callable[..., Awaitable[Esme]]


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Smsc]]]:
    """start(**config) -> a running Smsc on ephemeral ports, stopped after the test."""
    started: list[Smsc] = []

    async def make(**overrides: Any) -> Smsc:
        options: dict[str, Any] = {"host": HOST, "port": 0, "control_port": 0, "seed": 1}
        options.update(overrides)
        sim = Smsc(SimulatorConfig(**options))
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """connect(sim, bind=None | BindX, system_id=..., password=..., expect=0) -> Esme."""
    opened: list[Esme] = []

    async def make(
        sim: Smsc,
        bind: type[Pdu] | None = BindTransmitter,
        system_id: str = "smsmta",
        password: str = "secret",
        expect: int = S.ESME_ROK,
    ) -> Esme:
        reader, writer = await asyncio.open_connection(HOST, sim.port)
        esme = Esme(reader, writer)
        opened.append(esme)
        if bind is not None:
            response = await esme.request(bind(system_id=system_id, password=password))
            assert response.command_status == expect, hex(response.command_status)
            esme.bind_response = response  # type: ignore[attr-defined]
        return esme

    yield make
    for esme in opened:
        esme.writer.close()
        esme._task.cancel()


def mt(i: int = 0, registered_delivery: int = 1, **fields: Any) -> Pdu:
    values: dict[str, Any] = {
        "source_addr": "TEST",
        "destination_addr": f"336{i:08d}",
        "short_message": f"message number {i} for the test".encode(),
        "registered_delivery": registered_delivery,
    }
    values.update(fields)
    return SubmitSm(**values)


def receipt_fields(pdu: Pdu) -> dict[str, str]:
    assert pdu.esm_class == EsmClass.DELIVERY_RECEIPT
    return parse_annex_b(pdu.short_message.decode("ascii"))


# --------------------------------------------------------------------------------------------
# Binds
# --------------------------------------------------------------------------------------------


async def test_binds_accepted_answer_with_the_smsc_system_id(start, connect) -> None:
    sim = await start()
    for bind in (BindTransmitter, BindReceiver, BindTransceiver):
        esme = await connect(sim, bind)
        assert esme.bind_response.system_id == "SMSCSIM"
        assert esme.bind_response.tlv(Tag.sc_interface_version) == 0x34
    stats = sim.stats
    assert stats["binds_active"] == {"tx": 1, "rx": 1, "trx": 1}
    assert stats["binds_total"] == 3


async def test_bind_refusals(start, connect) -> None:
    sim = await start(max_binds=2, accounts={"second": "pw2"})
    await connect(sim, BindTransmitter, password="wrong", expect=S.ESME_RINVPASWD)
    await connect(sim, BindTransmitter, system_id="nobody", expect=S.ESME_RINVSYSID)
    first = await connect(sim, BindTransmitter)
    await connect(sim, BindReceiver)
    refused = await connect(sim, BindTransceiver, expect=S.ESME_RBINDFAIL)
    await connect(sim, BindTransceiver, system_id="second", password="pw2")  # its own cap
    assert sim.stats["binds_refused"] == 3
    # a refused bind leaves the connection open and unbound: it may try again later
    unbind_response = await first.request(Unbind())
    assert unbind_response.command_status == S.ESME_ROK
    await asyncio.wait_for(first.closed.wait(), TIMEOUT)
    again = await refused.request(BindTransceiver(system_id="smsmta", password="secret"))
    assert again.command_status == S.ESME_ROK
    assert sim.stats["unbinds"] == 1


async def test_requests_before_bind_are_refused(start, connect) -> None:
    sim = await start()
    unbound = await connect(sim, bind=None)
    receiver = await connect(sim, BindReceiver)
    for esme in (unbound, receiver):  # our own Session would refuse to send these
        esme.write_raw(encode(mt().with_sequence_number(50)))
        await eventually(lambda esme=esme: bool(strays(esme)), "the answer")
        [response] = strays(esme)
        assert response.sequence_number == 50
        assert response.command_status == S.ESME_RINVBNDSTS
    assert sim.stats["rejected"] == 2


def strays(esme: Esme) -> list[Pdu]:
    """Answers to requests written raw (the ESME's session never sent them)."""
    return [pdu for kind, pdu in esme.events if kind == "stray"]


# --------------------------------------------------------------------------------------------
# Submits, message ids and receipts
# --------------------------------------------------------------------------------------------


def expected_id(fmt: str, n: int) -> str | None:
    return {"decimal": str(n), "hex": f"{n:X}", "hexstring": str(n).encode().hex()}.get(fmt)


@pytest.mark.parametrize("id_format", ["decimal", "hex", "hexstring", "uuid"])
async def test_pipelined_submits_get_unique_ids_and_seeded_receipts(
    start, connect, id_format: str
) -> None:
    count, seed, fail_rate = 1000, 1234, 0.3
    sim = await start(id_format=id_format, fail_rate=fail_rate, seed=seed, dlr_delay_ms=20)
    receiver = await connect(sim, BindReceiver)
    transmitter = await connect(sim, BindTransmitter)
    futures = [transmitter.send(mt(i)) for i in range(count)]
    transmitter.flush()
    responses = await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
    assert all(r.command_status == S.ESME_ROK for r in responses)
    ids = [r.message_id for r in responses]
    assert len(set(ids)) == count
    for n, message_id in enumerate(ids, start=1):
        if id_format == "uuid":
            assert uuid.UUID(message_id).version == 4
            assert str(uuid.UUID(message_id)) == message_id
        else:
            assert message_id == expected_id(id_format, n)

    await eventually(lambda: len(receiver.deliveries) == count, "every receipt")
    picker = OutcomePicker(fail_rate, DEFAULT_FAILURE_STATS, seed)
    expected_stats = {}
    for message_id in ids:  # one connection: submits are accepted in the order sent
        pick = picker.pick()
        expected_stats[message_id] = (
            "DELIVRD" if pick == 0 else DEFAULT_FAILURE_STATS[pick - 1].stat
        )
    destination_of = {message_id: f"336{i:08d}" for i, message_id in enumerate(ids)}
    seen_stats = {}
    for receipt in receiver.deliveries:
        fields = receipt_fields(receipt)
        message_id = receipt.tlv(Tag.receipted_message_id)
        assert fields["id"] == message_id
        seen_stats[message_id] = fields["stat"]
        assert receipt.tlv(Tag.message_state) == STAT_STATES[fields["stat"]]
        assert fields["dlvrd"] == ("001" if fields["stat"] == "DELIVRD" else "000")
        assert fields["sub"] == "001"
        assert len(fields["submit date"]) == len(fields["done date"]) == 10
        i = int(destination_of[message_id][3:])
        assert fields["text"] == f"message number {i} for the test"[:20]
        assert receipt.source_addr == destination_of[message_id]
        assert receipt.destination_addr == "TEST"
        if fields["stat"] == "DELIVRD":
            assert fields["err"] == "000"
        else:
            failure = next(s for s in DEFAULT_FAILURE_STATS if s.stat == fields["stat"])
            assert fields["err"] == f"{failure.err:03d}"
            assert receipt.tlv(Tag.network_error_code) == bytes((3, 0, failure.err))
    assert seen_stats == expected_stats  # exact, message by message, for this seed
    failures = Counter(stat for stat in seen_stats.values() if stat != "DELIVRD")
    assert 240 <= sum(failures.values()) <= 360
    assert set(failures) == {"UNDELIV", "REJECTD", "EXPIRED"}
    await eventually(lambda: sim.stats["deliver_sm_acked"] == count, "every receipt acked")
    stats = sim.stats
    assert stats["submit_sm"] == count and stats["submit_sm_by_status"] == {"ESME_ROK": count}
    assert stats["receipts_generated"] == count and stats["deliver_sm_sent"] == count
    assert stats["duplicates"] == 0 and stats["receipts_pending"] == 0


async def test_receipts_are_spread_round_robin_over_receivers(start, connect) -> None:
    sim = await start(accounts={"other": "pw"})
    receivers = [await connect(sim, BindReceiver) for _ in range(2)]
    transceiver = await connect(sim, BindTransceiver)
    other = await connect(sim, BindReceiver, system_id="other", password="pw")
    futures = [transceiver.send(mt(i)) for i in range(30)]
    transceiver.flush()
    await asyncio.gather(*futures)
    boxes = [*receivers, transceiver]
    await eventually(lambda: sum(len(e.deliveries) for e in boxes) == 30, "30 receipts")
    assert sorted(len(e.deliveries) for e in boxes) == [10, 10, 10]
    assert other.deliveries == []  # receipts stay with their own system_id


async def test_registered_delivery_values(start, connect) -> None:
    sim = await start(fail_rate=0.5, seed=3)
    receiver = await connect(sim, BindReceiver)
    transmitter = await connect(sim, BindTransmitter)
    futures = [transmitter.send(mt(i, registered_delivery=rd)) for rd in (0, 2) for i in range(20)]
    transmitter.flush()
    await asyncio.gather(*futures)
    await asyncio.sleep(0.1)
    picker = OutcomePicker(0.5, DEFAULT_FAILURE_STATS, 3)
    picks = [picker.pick() for _ in range(40)]
    assert len(receiver.deliveries) == sum(1 for p in picks[20:] if p)  # failures only
    assert all(receipt_fields(r)["stat"] != "DELIVRD" for r in receiver.deliveries)
    assert receiver.deliveries  # this seed fails some of them


async def test_receipts_wait_for_a_receiver(start, connect) -> None:
    sim = await start()
    transmitter = await connect(sim, BindTransmitter)
    futures = [transmitter.send(mt(i)) for i in range(50)]
    transmitter.flush()
    ids = {r.message_id for r in await asyncio.gather(*futures)}
    await eventually(lambda: sim.stats["receipts_pending"] == 50, "50 receipts pending")
    receiver = await connect(sim, BindReceiver)
    await eventually(lambda: len(receiver.deliveries) == 50, "the queued receipts")
    assert {r.tlv(Tag.receipted_message_id) for r in receiver.deliveries} == ids
    await eventually(lambda: sim.stats["receipts_pending"] == 0, "an empty queue")


async def test_unacknowledged_receipts_are_resent_after_the_receiver_drops(start, connect) -> None:
    sim = await start()
    silent = await connect(sim, BindReceiver)
    silent.answer = lambda pdu: None  # receives, never answers
    transmitter = await connect(sim, BindTransmitter)
    futures = [transmitter.send(mt(i)) for i in range(20)]
    transmitter.flush()
    ids = {r.message_id for r in await asyncio.gather(*futures)}
    await eventually(lambda: len(silent.deliveries) == 20, "receipts on the silent receiver")
    assert sim.stats["deliver_sm_in_flight"] == 20
    silent.abort()
    await eventually(lambda: sim.stats["receipts_pending"] == 20, "receipts back in line")
    receiver = await connect(sim, BindReceiver)
    await eventually(lambda: len(receiver.deliveries) == 20, "receipts re-sent")
    assert {r.tlv(Tag.receipted_message_id) for r in receiver.deliveries} == ids
    await eventually(lambda: sim.stats["deliver_sm_acked"] == 20, "acks")
    assert sim.stats["deliver_sm_resent"] == 20
    assert sim.stats["deliver_sm_sent"] == 40


async def test_deliver_sm_answered_with_an_error_is_resent_later(start, connect) -> None:
    sim = await start(deliver_retry_ms=50)
    receiver = await connect(sim, BindReceiver)
    answers = iter([S.ESME_RX_T_APPN, S.ESME_RTHROTTLED])
    receiver.answer = lambda pdu: next(answers, S.ESME_ROK)
    transmitter = await connect(sim, BindTransmitter)
    response = await transmitter.request(mt(1))
    await eventually(lambda: len(receiver.deliveries) == 3, "two re-sends")
    assert {r.tlv(Tag.receipted_message_id) for r in receiver.deliveries} == {response.message_id}
    await eventually(lambda: sim.stats["deliver_sm_acked"] == 1, "the ack")
    stats = sim.stats
    assert stats["deliver_sm_errors"] == 2 and stats["deliver_sm_resent"] == 2


async def test_receipt_before_resp_on_a_transceiver(start, connect) -> None:
    sim = await start(receipt_before_resp=True, dlr_delay_ms=5000)
    transceiver = await connect(sim, BindTransceiver)
    responses = [await transceiver.request(mt(i)) for i in range(3)]
    kinds = [kind for kind, _ in transceiver.events[1:]]  # after the bind_resp
    assert kinds == ["deliver", "resp"] * 3
    receipt_ids = [pdu.tlv(Tag.receipted_message_id) for kind, pdu in transceiver.events[1::2]]
    assert receipt_ids == [r.message_id for r in responses]


async def test_receipt_before_resp_on_a_separate_receiver(start, connect) -> None:
    sim = await start(receipt_before_resp=True)
    receiver = await connect(sim, BindReceiver)
    transmitter = await connect(sim, BindTransmitter)
    future = transmitter.send(mt(7))
    transmitter.flush()
    await eventually(lambda: future.done() or bool(receiver.deliveries), "resp or receipt")
    await eventually(lambda: len(receiver.deliveries) == 1, "the receipt")
    response = await future
    assert receiver.deliveries[0].tlv(Tag.receipted_message_id) == response.message_id


async def test_data_sm_and_message_payload(start, connect) -> None:
    sim = await start()
    transceiver = await connect(sim, BindTransceiver)
    long_text = ("x" * 300).encode()
    response = await transceiver.request(
        DataSm(
            source_addr="TEST",
            destination_addr="33600000009",
            registered_delivery=1,
            tlvs=((Tag.message_payload, long_text),),
        )
    )
    assert response.command_status == S.ESME_ROK and response.message_id == "1"
    payload = await transceiver.request(
        mt(2, short_message=b"", tlvs=((Tag.message_payload, b"p"),))
    )
    assert payload.message_id == "2"
    await eventually(lambda: len(transceiver.deliveries) == 2, "two receipts")
    assert receipt_fields(transceiver.deliveries[0])["text"] == "x" * 20
    stats = sim.stats
    assert stats["data_sm"] == 1 and stats["data_sm_by_status"] == {"ESME_ROK": 1}


async def test_query_cancel_replace_and_submit_multi(start, connect) -> None:
    sim = await start(dlr_delay_ms=300)
    transceiver = await connect(sim, BindTransceiver)
    first = (await transceiver.request(mt(1))).message_id
    second = (await transceiver.request(mt(2))).message_id
    query = await transceiver.request(QuerySm(message_id=first, source_addr="TEST"))
    assert query.command_status == S.ESME_ROK
    assert query.message_state == MessageState.ENROUTE and query.final_date == ""
    replaced = await transceiver.request(ReplaceSm(message_id=first, short_message=b"new text"))
    assert replaced.command_status == S.ESME_ROK
    cancelled = await transceiver.request(CancelSm(message_id=second, destination_addr="1"))
    assert cancelled.command_status == S.ESME_ROK
    again = await transceiver.request(CancelSm(message_id=second))
    assert again.command_status == S.ESME_RCANCELFAIL
    unknown = await transceiver.request(QuerySm(message_id="999999"))
    assert unknown.command_status == S.ESME_RQUERYFAIL
    await eventually(lambda: len(transceiver.deliveries) == 2, "two receipts")
    by_id = {r.tlv(Tag.receipted_message_id): receipt_fields(r) for r in transceiver.deliveries}
    assert by_id[first]["text"] == "new text" and by_id[first]["stat"] == "DELIVRD"
    assert by_id[second]["stat"] == "DELETED"
    done = await transceiver.request(QuerySm(message_id=first))
    assert done.message_state == MessageState.DELIVERED and len(done.final_date) == 16
    late = await transceiver.request(ReplaceSm(message_id=first, short_message=b"late"))
    assert late.command_status == S.ESME_RREPLACEFAIL
    destinations = (SmeAddress(1, 1, "33600000001"),)
    multi = await transceiver.request(
        SubmitMulti(source_addr="TEST", dest_addresses=destinations, short_message=b"x")
    )
    assert multi.command_status == S.ESME_RINVCMDID
    other = await connect(sim, BindTransceiver)  # same system_id, but ids are per account
    assert (await other.request(QuerySm(message_id=first))).command_status == S.ESME_ROK


async def test_duplicates_are_counted_by_destination_text_and_reference(start, connect) -> None:
    sim = await start()
    transmitter = await connect(sim, BindTransmitter)
    umr = Tag.user_message_reference
    submits = [
        mt(1, tlvs=((umr, 7),)),
        mt(1, tlvs=((umr, 7),)),  # duplicate
        mt(1, tlvs=((umr, 8),)),  # another reference
        mt(1),  # no reference: another key
        mt(1),  # duplicate
        mt(2, tlvs=((umr, 7),)),  # another destination
        mt(1, short_message=b"", tlvs=((Tag.message_payload, b"message number 1 for the test"),)),
    ]
    for pdu in submits:
        assert (await transmitter.request(pdu)).command_status == S.ESME_ROK
    # short_message or message_payload: the same body -> the same key as mt(1) without umr
    assert sim.stats["duplicates"] == 3


# --------------------------------------------------------------------------------------------
# MO
# --------------------------------------------------------------------------------------------


async def test_mo_injected_from_python(start, connect) -> None:
    sim = await start()
    transceiver = await connect(sim, BindTransceiver)
    assert await sim.inject_mo("+33612345678", "38000", "STOP") == 1
    await eventually(lambda: len(transceiver.deliveries) == 1, "the MO")
    mo = transceiver.deliveries[0]
    assert mo.esm_class == 0 and mo.data_coding == 0 and mo.short_message == b"STOP"
    assert (mo.source_addr, mo.source_addr_ton) == ("33612345678", Ton.INTERNATIONAL)
    assert mo.destination_addr == "38000"
    await eventually(lambda: sim.stats["deliver_sm_acked"] == 1, "the ack")
    assert sim.stats["mo_sent"] == 1 and sim.stats["mo_injected"] == 1


async def test_long_ucs2_mo_is_split_with_a_udh(start, connect) -> None:
    sim = await start(mo_short_code="36180")
    receiver = await connect(sim, BindReceiver)
    text = "Привет! " * 20  # 160 UCS-2 characters: three parts of at most 67
    assert await sim.inject_mo("+33612345678", None, text) == 3
    await eventually(lambda: len(receiver.deliveries) == 3, "three parts")
    pieces = {}
    for part in receiver.deliveries:
        assert part.esm_class & EsmClass.UDHI and part.data_coding == 8
        assert part.destination_addr == "36180"
        concat = parse_udh(part.short_message).concat
        assert concat is not None and concat.total == 3
        decoded = decode_short_message(part.short_message, part.data_coding, udhi=True)
        pieces[concat.seq] = decoded.text
    assert "".join(pieces[i] for i in (1, 2, 3)) == text


async def test_mo_waits_for_a_receiver_and_checks_its_arguments(start, connect) -> None:
    sim = await start()
    assert await sim.inject_mo("+33612345678", "38000", "hello", data_coding=3) == 1
    with pytest.raises(ValueError, match="data_coding"):
        await sim.inject_mo("+33612345678", "38000", "hello", data_coding=5)
    with pytest.raises(ValueError, match="system_id"):
        await sim.inject_mo("+33612345678", "38000", "hello", system_id="nobody")
    with pytest.raises(ValueError, match="source"):
        await sim.inject_mo("+" + "1" * 30, "38000", "hello")
    assert sim.stats["receipts_pending"] == 1
    receiver = await connect(sim, BindReceiver)
    await eventually(lambda: len(receiver.deliveries) == 1, "the MO")
    assert receiver.deliveries[0].data_coding == 3


async def test_mo_posted_to_the_control_endpoint(start, connect) -> None:
    sim = await start()
    transceiver = await connect(sim, BindTransceiver)
    body = {"source": "+33611111111", "destination": "38000", "text": "été", "data_coding": 8}
    status, answer, _ = await http(sim.control_port, "POST", "/mo", body)
    assert (status, answer) == (200, {"parts": 1})
    await eventually(lambda: len(transceiver.deliveries) == 1, "the MO")
    assert transceiver.deliveries[0].short_message == "été".encode("utf-16-be")
    status, answer, _ = await http(sim.control_port, "POST", "/mo", {"text": "no source"})
    assert status == 400 and "source" in answer["error"]
    status, answer, _ = await http(sim.control_port, "POST", "/mo", {"source": "1", "text": 5})
    assert status == 400
    status, answer, _ = await http(sim.control_port, "POST", "/mo", {"source": "1", "x": 1})
    assert status == 400 and "x" in answer["error"]


# --------------------------------------------------------------------------------------------
# Throttling, delays, drops
# --------------------------------------------------------------------------------------------


async def test_max_tps_throttles_past_the_rate(start, connect) -> None:
    sim = await start(max_tps=50)
    transmitter = await connect(sim, BindTransmitter)
    receiver = await connect(sim, BindReceiver)
    futures = [transmitter.send(mt(i)) for i in range(80)]
    transmitter.flush()
    statuses = Counter(r.command_status for r in await asyncio.gather(*futures))
    assert statuses == {S.ESME_ROK: 50, S.ESME_RTHROTTLED: 30}
    await asyncio.sleep(1.05)  # the window slides: room again
    assert (await transmitter.request(mt(99))).command_status == S.ESME_ROK
    await eventually(lambda: len(receiver.deliveries) == 51, "receipts of accepted ones only")
    stats = sim.stats
    assert stats["throttled"] == stats["throttled_tps"] == 30
    assert stats["submit_sm_by_status"] == {"ESME_ROK": 51, "ESME_RTHROTTLED": 30}


async def test_max_window_throttles_unanswered_submits(start, connect) -> None:
    sim = await start(max_window=5, resp_delay_ms=200)
    transmitter = await connect(sim, BindTransmitter)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    futures = [transmitter.send(mt(i)) for i in range(8)]
    transmitter.flush()
    first_throttled = await asyncio.wait_for(futures[5], TIMEOUT)
    assert first_throttled.command_status == S.ESME_RTHROTTLED
    assert loop.time() - sent_at < 0.15  # answered at once, not delayed
    responses = await asyncio.gather(*futures)
    assert loop.time() - sent_at >= 0.2
    assert [r.command_status for r in responses] == [0] * 5 + [S.ESME_RTHROTTLED] * 3
    # once answered, the window is free again
    assert (await transmitter.request(mt(9))).command_status == S.ESME_ROK
    assert sim.stats["throttled_window"] == 3


async def test_resp_delay_and_config_changes_at_run_time(start, connect) -> None:
    sim = await start()
    transmitter = await connect(sim, BindTransmitter)
    loop = asyncio.get_running_loop()
    status, runtime, _ = await http(sim.control_port, "POST", "/config", {"resp_delay_ms": 150})
    assert status == 200 and runtime["resp_delay_ms"] == 150
    began = loop.time()
    futures = [transmitter.send(mt(i)) for i in range(10)]
    transmitter.flush()
    await asyncio.gather(*futures)
    assert loop.time() - began >= 0.15
    status, runtime, _ = await http(
        sim.control_port, "POST", "/config", {"resp_delay_ms": 0, "submit_fail_rate": 1}
    )
    assert status == 200 and runtime["submit_fail_rate"] == 1
    refused = await transmitter.request(mt(11))
    assert refused.command_status == S.ESME_RSUBMITFAIL


async def test_drop_after_aborts_at_the_nth_submit(start, connect) -> None:
    sim = await start(drop_after=3)
    transmitter = await connect(sim, BindTransmitter)
    for i in range(2):
        assert (await transmitter.request(mt(i))).command_status == S.ESME_ROK
    third = transmitter.send(mt(2))
    transmitter.flush()
    await asyncio.wait_for(transmitter.closed.wait(), TIMEOUT)
    with pytest.raises(ConnectionError):
        await third
    assert sim.stats["dropped_connections"] == 1
    # pipelined: the connection goes at the third, whatever follows it
    pipelined = await connect(sim, BindTransmitter)
    futures = [pipelined.send(mt(i)) for i in range(6)]
    pipelined.flush()
    await asyncio.wait_for(pipelined.closed.wait(), TIMEOUT)
    answered = [f.result() for f in futures if f.done() and not f.exception()]
    assert len(answered) <= 2
    assert sim.stats["dropped_connections"] == 2


# --------------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------------


def header(length: int, command_id: int, sequence: int = 77) -> bytes:
    """A PDU header with command_status 0."""
    return b"".join(n.to_bytes(4, "big") for n in (length, command_id, 0, sequence))


async def test_malformed_pdus_are_answered_and_the_session_survives(start, connect) -> None:
    sim = await start()
    transmitter = await connect(sim, BindTransmitter)
    transmitter.write_raw(header(16, 0x00000099))  # unknown command_id
    await eventually(lambda: any(k == "stray" for k, _ in transmitter.events), "generic_nack")
    nack = next(pdu for kind, pdu in transmitter.events if kind == "stray")
    assert isinstance(nack, GenericNack)
    assert (nack.command_status, nack.sequence_number) == (S.ESME_RINVCMDID, 77)
    # a submit_sm whose body stops short: answered with submit_sm_resp and an error status
    body = encode(mt(1))[16:30]
    transmitter.write_raw(header(16 + len(body), 0x00000004, sequence=78) + body)
    await eventually(lambda: sum(k == "stray" for k, _ in transmitter.events) == 2, "the resp")
    bad = [pdu for kind, pdu in transmitter.events if kind == "stray"][1]
    assert bad.sequence_number == 78 and bad.command_status != S.ESME_ROK
    assert (await transmitter.request(EnquireLink())).command_status == S.ESME_ROK
    assert (await transmitter.request(mt(2))).command_status == S.ESME_ROK
    assert sim.stats["malformed"] == 2
    status, stats, _ = await http(sim.control_port, "GET", "/stats")
    assert status == 200 and stats["malformed"] == 2


async def test_lost_framing_closes_the_connection(start, connect) -> None:
    sim = await start()
    transmitter = await connect(sim, BindTransmitter)
    transmitter.write_raw(header(8, 0x00000004))  # command_length under 16
    await asyncio.wait_for(transmitter.closed.wait(), TIMEOUT)
    assert any(isinstance(pdu, GenericNack) for _, pdu in transmitter.events)
    assert sim.stats["malformed"] == 1
    await eventually(lambda: sim.stats["connections"] == 0, "the connection closed")


# --------------------------------------------------------------------------------------------
# Control endpoint, configuration, CLI
# --------------------------------------------------------------------------------------------


async def test_control_endpoint(start) -> None:
    sim = await start()
    port = sim.control_port
    status, stats, head = await http(port, "GET", "/stats")
    assert status == 200 and b"application/json" in head
    for key in (
        "binds_total",
        "binds_refused",
        "binds_active",
        "submit_sm",
        "submit_sm_by_status",
        "data_sm",
        "deliver_sm_sent",
        "deliver_sm_acked",
        "deliver_sm_resent",
        "receipts_pending",
        "mo_sent",
        "throttled",
        "dropped_connections",
        "malformed",
        "duplicates",
    ):
        assert key in stats
    status, runtime, _ = await http(port, "GET", "/config")
    assert status == 200 and runtime["fail_rate"] == 0
    changes = {"fail_rate": 0.5, "max_tps": 10, "drop_after": 4, "dlr_delay_ms": 7}
    status, runtime, _ = await http(port, "POST", "/config", changes)
    assert status == 200 and {k: runtime[k] for k in changes} == changes
    assert sim.config.max_tps == 10
    status, error, _ = await http(port, "POST", "/config", {"fail_rate": 2})
    assert status == 400 and "fail_rate" in error["error"]
    status, error, _ = await http(port, "POST", "/config", {"port": 1})
    assert status == 400 and "port" in error["error"]
    status, error, _ = await http(port, "POST", "/config", b"{not json")
    assert status == 400 and "JSON" in error["error"]
    status, error, _ = await http(port, "POST", "/config", [1, 2])
    assert status == 400
    assert sim.config.fail_rate == 0.5  # refused changes changed nothing
    status, error, _ = await http(port, "GET", "/nowhere")
    assert status == 404 and "error" in error
    status, error, head = await http(port, "DELETE", "/stats")
    assert status == 405 and b"Allow: GET" in head
    status, error, _ = await http(port, "", "", raw=b"NONSENSE\r\n\r\n")
    assert status == 400
    raw = b"POST /mo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    status, error, _ = await http(port, "", "", raw=raw)
    assert status == 400 and "chunked" in error["error"]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="id_format"):
        SimulatorConfig(id_format="base64")
    with pytest.raises(ValueError, match="fail_rate"):
        SimulatorConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="8 characters"):
        SimulatorConfig(password="much-too-long")
    with pytest.raises(ValueError, match="DELIVRD"):
        SimulatorConfig(dlr_failure_stats=parse_failure_stats("DELIVRD:0"))
    assert parse_failure_stats("undeliv:5:2, expired") == (
        ("UNDELIV", 5, 2.0),
        ("EXPIRED", 1, 1.0),
    )
    with pytest.raises(ValueError):
        parse_failure_stats("UNDELIV:x")


def test_outcome_picker_is_a_function_of_the_seed() -> None:
    first = OutcomePicker(0.25, DEFAULT_FAILURE_STATS, 42)
    second = OutcomePicker(0.25, DEFAULT_FAILURE_STATS, 42)
    picks = [first.pick() for _ in range(10_000)]
    assert picks == [second.pick() for _ in range(10_000)]
    counts = Counter(picks)
    assert 2300 <= sum(v for k, v in counts.items() if k) <= 2700
    # weights 6:2:2 among failures
    assert counts[1] > counts[2] and counts[1] > counts[3]
    assert OutcomePicker(0.0, DEFAULT_FAILURE_STATS, 1).pick() == 0


def test_cli_command_help() -> None:
    command = cli_command()
    assert command.name == "smsc-sim"
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--host",
        "--port",
        "--system-id",
        "--password",
        "--max-binds",
        "--id-format",
        "--dlr-delay-ms",
        "--fail-rate",
        "--resp-delay-ms",
        "--max-window",
        "--max-tps",
        "--drop-after",
        "--control-port",
    ):
        assert flag in result.output
    bad = CliRunner().invoke(command, ["--fail-rate", "3"])
    assert bad.exit_code == 2 and "fail_rate" in bad.output


async def test_cli_runs_on_uvloop_until_sigterm() -> None:
    code = (
        "from smsmta.simulator import cli_command; "
        "cli_command()(['--host', '127.0.0.1', '--port', '0', '--control-port', '0'])"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT)).decode()
        match = re.search(r"SMPP on 127\.0\.0\.1:(\d+) \(system_id smsmta\)", line)
        assert match, line
        control = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT)).decode()
        assert re.search(r"control on http://127\.0\.0\.1:\d+/stats", control), control
        reader, writer = await asyncio.open_connection(HOST, int(match.group(1)))
        esme = Esme(reader, writer)
        bound = await esme.request(BindTransceiver(system_id="smsmta", password="secret"))
        assert bound.command_status == S.ESME_ROK
        assert (await esme.request(mt(1))).message_id == "1"
        await esme.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
