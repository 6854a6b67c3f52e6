"""Mutated PDUs on live SMPP sessions: nothing crashes, every bad PDU gets SMPP's answer.

Four targets, each over real sockets on 127.0.0.1 (smsmta/testing/smpp_fuzzer.py has the
mutations, the expected answers and the drivers):

1. our `SmppClient` (receiver bind) bound to a raw fake SMSC in this process;
2. the real SMS process (`smsmta sms-process`, a subprocess) whose receiver binds to the
   fake SMSC: it stores what it can, answers errors for the rest, matches nothing;
3. the real MTA (`smsmta mta`, supervisor + one child) whose transmitter binds to it:
   afterwards it still sends the queue (in test_smpp_tls.py, which shares that MTA with
   its TLS accounts: one MTA start for both);
4. the simulator (`smsmta smsc-sim`, a subprocess) fuzzed by a raw-socket ESME.

Each test prints its count table (`pytest -s`): PDUs sent by mutation, answers by kind,
connection closes, re-binds, crashes (must be 0), mismatches (must be 0). The PDU counts
are kept small for the suite (FUZZ_PDUS); `bench/fuzz_session.py --pdus N` runs more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from smsmta.smpp.aio import BaseHandler, SmppClient
from smsmta.smpp.codec import encode
from smsmta.smpp.constants import CommandId, EsmClass, Tag
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import DeliverSm, GenericNack, SubmitSm
from smsmta.smpp.session import Role, Session
from smsmta.testing.smpp_fuzzer import (
    EsmeLinks,
    FakeSmsc,
    Link,
    Tally,
    fuzz_esme,
    fuzz_smsc,
    receiver_settings,
)
from smsmta.testing.smpp_mutations import (
    ESME_RX,
    SMSC_TRX,
    make_cases,
)
from tests.mta.conftest import ROOT, free_port
from tests.sms_process.conftest import (
    SmsHarness,
    sms,  # noqa: F401  (the fixture)
    sms_config,
)

pytestmark = pytest.mark.timeout(120)

FUZZ_PDUS = int(os.environ.get("SMSMTA_FUZZ_PDUS", "1000"))  # per service; x3 in-process
SEED = int(os.environ.get("SMSMTA_FUZZ_SEED", "20261122"))


def report(tally: Tally, *links: Link) -> None:
    for link in links:
        tally.mismatches += [f"the peer sent an invalid PDU: {bad}" for bad in link.invalid]
    print("\n" + tally.table())
    assert tally.crashes == 0, tally.table()
    assert not tally.mismatches, tally.table()


async def probe_answered(link: Link, pdu: Any, timeout: float = 15.0) -> Any:
    """Send one valid request and return its answer."""
    link.send(encode(pdu))
    assert await link.wait(lambda: pdu.sequence_number in link.answers, timeout), (
        f"no answer to {pdu!r}"
    )
    [answer] = link.answers.pop(pdu.sequence_number)
    return answer


def valid_receipt(seq: int, msg_id: str) -> DeliverSm:
    text = f"id:{msg_id} sub:001 dlvrd:001 submit date:2601010000 done date:2601010001"
    return DeliverSm(
        sequence_number=seq,
        source_addr="33612345678",
        destination_addr="38000",
        esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=f"{text} stat:DELIVRD err:000 Text:hi".encode(),
        tlvs=((Tag.receipted_message_id, msg_id), (Tag.message_state, 2)),
    )


# --- 1. our client --------------------------------------------------------------------------


async def test_fuzz_our_smpp_client() -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    received: list[Any] = []

    class Handler(BaseHandler):
        def on_request(self, conn: Any, pdu: Any) -> None:
            received.append(pdu)
            super().on_request(conn, pdu)

    try:
        async with FakeSmsc() as smsc:
            settings = receiver_settings(smsc.port)
            client = SmppClient(settings, Handler())
            task = asyncio.create_task(client.run())
            try:
                cases = make_cases(SEED, ESME_RX, FUZZ_PDUS * 3)
                tally = Tally("our SmppClient (receiver)")
                await fuzz_esme(smsc, cases, tally)
                if task.done():
                    tally.crashes += 1
                tally.crashes += len(unhandled)
                # afterwards: still (re-)bound, and a valid receipt is taken and answered
                link = await smsc.bound_link(10)
                answer = await probe_answered(link, valid_receipt(0x60000001, "ABC123"))
                assert answer.command_id == CommandId.deliver_sm_resp
                assert answer.command_status == 0
                assert received[-1].tlv(Tag.receipted_message_id) == "ABC123"
                expected_ok = sum(
                    c.expected.kind == "answer"
                    and c.expected.command_id == CommandId.deliver_sm_resp
                    and c.expected.status == 0
                    for c in cases
                )
                assert len(received) == expected_ok + 1  # only what decoded reached us
                report(tally, *smsc.all_links)
            finally:
                await client.stop(0)
                await asyncio.wait_for(task, 10)
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled, unhandled


# --- 2. the SMS process ---------------------------------------------------------------------

# valid deliver_sm whose text holds a NUL: an MO with one once killed the SMS process (the
# COPY into mid.in_sms); sent after the fuzz
NUL_TEXTS = {
    "mo_latin1": DeliverSm(
        source_addr="33611111111",
        destination_addr="38000",
        data_coding=3,
        short_message=b"A\x00B",
    ),
    "mo_ucs2": DeliverSm(
        source_addr="33611111111",
        destination_addr="38000",
        data_coding=8,
        short_message=b"\x00A\x00\x00",
    ),
    "receipt": valid_receipt(0, "NUL1").replace(
        short_message=b"id:NUL1 sub:001 dlvrd:001 submit date:2601010000 done date:2601010001"
        b" stat:DELIVRD err:000 Text:a\x00b"
    ),
}


async def test_fuzz_the_sms_process_receiver(sms: SmsHarness) -> None:  # noqa: F811
    async with FakeSmsc() as smsc:
        path, _ = sms.write_config(sms_config(smsc.port))
        process = await sms.start_sms_process(path)
        await smsc.bound_link(30)
        cases = make_cases(SEED + 1, ESME_RX, FUZZ_PDUS)
        tally = Tally("SMS process (receiver)")
        await fuzz_esme(smsc, cases, tally)
        if process.process.returncode is not None:
            tally.crashes += 1
        # afterwards: re-bound; texts holding NUL are stored, then a valid MO
        link = await smsc.bound_link(30)
        for seq, name in enumerate(sorted(NUL_TEXTS), 0x60000010):
            answer = await probe_answered(link, NUL_TEXTS[name].with_sequence_number(seq))
            assert (answer.command_id, answer.command_status) == (CommandId.deliver_sm_resp, 0)
        mo = DeliverSm(
            sequence_number=0x60000002,
            source_addr="33699999999",
            destination_addr="38000",
            short_message=b"FUZZ END CHECK",
        )
        answer = await probe_answered(link, mo)
        assert (answer.command_id, answer.command_status) == (CommandId.deliver_sm_resp, 0)

        async def stored() -> bool:
            n = await sms.scalar("SELECT count(*) FROM mid.in_sms WHERE text = 'FUZZ END CHECK'")
            return bool(n)

        await sms.until(stored, 30, "the valid MO stored after the fuzz", process)
        kept = await sms.scalar(
            # the sender stored canonical (E.164), whatever its TON said
            "SELECT count(*) FROM mid.in_sms WHERE source_addr = '+33611111111'"
            " AND strpos(text, '\ufffd') > 0"
        )
        assert kept == 2  # both NUL MOs stored, NUL shown as the replacement character
        log = process.log()
        if "Traceback" in log:
            tally.crashes += 1
            print(log[log.index("Traceback") - 2000 :][:6000])
        # nothing the fuzz sent was taken for a receipt of ours: there is no MT to match,
        # and no receipt may say otherwise
        matched = await sms.scalar(
            "SELECT count(*) FROM mid.receipt WHERE broad_log_id IS NOT NULL"
            " OR result::text NOT IN ('unmatched', 'invalid', 'intermediate')"
        )
        assert matched == 0
        assert await sms.scalar("SELECT count(*) FROM mid.broad_log") == 0
        assert process.process.returncode is None
        report(tally, *smsc.all_links)
        assert await process.stop() == 0


# --- 3. the MTA: in tests/badinput/test_smpp_tls.py, next to its TLS accounts (one MTA start)


# --- 4. the simulator -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def simulator_process(tmp_path: Path) -> Any:
    port = free_port()
    log_path = tmp_path / "smsc-sim.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "smsmta.cli",
            "smsc-sim",
            "--port",
            str(port),
            "--seed",
            "5",
            stdout=log,
            stderr=log,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process.returncode is not None or loop.time() > deadline:
                    pytest.fail(f"smsc-sim did not start:\n{log_path.read_text()[-3000:]}")
                await asyncio.sleep(0.1)
        yield port, process, log_path
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def test_fuzz_the_simulator(tmp_path: Path) -> None:
    async with simulator_process(tmp_path) as (port, process, log_path):
        links = EsmeLinks("127.0.0.1", port, "smsmta", "secret")
        try:
            cases = make_cases(SEED + 3, SMSC_TRX, FUZZ_PDUS * 2)
            tally = Tally("simulator (smsc-sim, transceiver)")
            await fuzz_smsc(links, cases, tally)
            if process.returncode is not None:
                tally.crashes += 1
            link = await links.get()
            answer = await probe_answered(
                link,
                SubmitSm(sequence_number=0x60000003, destination_addr="33600000001"),
            )
            assert (answer.command_id, answer.command_status) == (CommandId.submit_sm_resp, 0)
            if "Traceback" in log_path.read_text(errors="replace"):
                tally.crashes += 1
            report(tally, *links.all_links)
        finally:
            links.close()


# --- the session alone: what the oracle relies on -------------------------------------------


@pytest.mark.parametrize(
    ("role", "command_id", "body"),
    [
        ("esme", CommandId.bind_transmitter, b"X" * 40),  # system_id over 16, no NUL
        ("esme", CommandId.submit_sm, b"\0\1"),  # truncated
        ("smsc", CommandId.deliver_sm, b"\0\1"),
    ],
)
def test_a_malformed_request_the_role_never_receives_gets_generic_nack(
    role: str, command_id: int, body: bytes
) -> None:
    session = Session(Role(role))
    session.receive_data(struct.pack(">IIII", 16 + len(body), command_id, 0, 42) + body, 0.0)
    with pytest.raises(RemoteProtocolError) as raised:
        session.next_event()
    assert raised.value.command_status == S.ESME_RINVCMDID and not raised.value.framing_lost
    assert session.data_to_send() == encode(
        GenericNack(sequence_number=42, command_status=S.ESME_RINVCMDID)
    )
