"""The asyncio client over real sockets: the simulator, and servers that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.aio import BaseHandler, BindError, BindKind, BindSettings, SmppClient, connect
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.constants import Tag
from smsmta.smpp.pdu import SubmitSm
from smsmta.smpp.session import Expired, Response, Timeouts

pytestmark = pytest.mark.timeout(60)

FAST = Timeouts(response=5.0, bind=2.0, enquire_link_period=30.0, unbind=1.0)


class Recorder(BaseHandler):
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.expired: list[tuple[Expired, str]] = []
        self.requests: list = []
        self.bound = 0
        self.unbound: list[str] = []
        self.changed = asyncio.Event()

    def on_bound(self, conn) -> None:
        self.bound += 1
        self.changed.set()

    def on_unbound(self, conn, reason: str) -> None:
        self.unbound.append(reason)
        self.changed.set()

    def on_response(self, conn, response: Response) -> None:
        self.responses.append(response)
        self.changed.set()

    def on_expired(self, conn, expired: Expired, reason: str) -> None:
        self.expired.append((expired, reason))
        self.changed.set()

    def on_request(self, conn, pdu) -> None:
        self.requests.append(pdu)
        conn.respond(pdu.make_resp())
        self.changed.set()

    async def wait(self, condition, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def settings(port: int, **changes: object) -> BindSettings:
    values = {
        "host": "127.0.0.1",
        "port": port,
        "system_id": "smsmta",
        "password": "secret",
        "window": 10,
        "timeouts": FAST,
        "reconnect_delay": 0.1,
    }
    values.update(changes)
    return BindSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with Smsc(SimulatorConfig(port=0, seed=3)) as simulator:
        yield simulator


async def test_pipelined_submits_come_back_with_their_context(smsc: Smsc) -> None:
    recorder = Recorder()
    conn = await connect(settings(smsc.port), recorder)
    assert conn.is_bound and recorder.bound == 1
    for i in range(10):
        conn.submit(SubmitSm(destination_addr=f"3360000{i}"), context=i)
    assert conn.window_free == 0
    await recorder.wait(lambda: len(recorder.responses) == 10)
    assert sorted(r.context for r in recorder.responses) == list(range(10))
    assert all(r.pdu.command_status == 0 and r.pdu.message_id for r in recorder.responses)
    assert conn.window_free == 10
    await conn.unbind()
    conn.close()
    await conn.closed
    assert smsc.counters.unbinds == 1


async def test_wrong_password_is_a_bind_error(smsc: Smsc) -> None:
    with pytest.raises(BindError, match="ESME_RINVPASWD"):
        await connect(settings(smsc.port, password="wrong"), Recorder())


async def silent_server(answer_bind: bool) -> tuple[asyncio.Server, int]:
    """A server that never answers the bind, or answers it and then says nothing more."""
    from smsmta.smpp.codec import Framer, decode, encode

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                framer.feed(data)
                while (frame := framer.next_frame()) is not None:
                    pdu = decode(frame)
                    if answer_bind and pdu.command_id in (1, 2, 9):
                        writer.write(encode(pdu.make_resp(system_id="MUTE")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_bind_timeout() -> None:
    server, port = await silent_server(answer_bind=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await connect(settings(port, timeouts=FAST._replace(bind=0.5)), Recorder())
    assert 0.4 < loop.time() - started < 2.0
    server.close()


async def test_dead_link_is_detected_and_the_client_reconnects() -> None:
    server, port = await silent_server(answer_bind=True)
    recorder = Recorder()
    timeouts = FAST._replace(enquire_link_period=0.2)
    client = SmppClient(settings(port, timeouts=timeouts), recorder)
    task = asyncio.create_task(client.run())
    await recorder.wait(lambda: recorder.bound >= 2, timeout=10)  # dead after 0.6 s, rebound
    assert recorder.unbound and "enquire_link" in recorder.unbound[0]
    assert client.reconnects >= 1
    await client.stop(0)
    await task
    server.close()


async def test_mt_timeout_and_lost_connection_hand_back_the_requests(smsc: Smsc) -> None:
    smsc.update_config(resp_delay_ms=2_000)
    recorder = Recorder()
    conn = await connect(settings(smsc.port, timeouts=FAST._replace(response=0.3)), recorder)
    conn.submit(SubmitSm(destination_addr="33600000001"), context="late")
    await recorder.wait(lambda: recorder.expired)
    [(expired, reason)] = recorder.expired
    assert (expired.context, reason) == ("late", "timeout")

    smsc.update_config(resp_delay_ms=0, drop_after=3)
    recorder = Recorder()
    conn = await connect(settings(smsc.port), recorder)
    for i in range(3):
        conn.submit(SubmitSm(destination_addr="33600000001"), context=i)
    await recorder.wait(lambda: recorder.expired and recorder.unbound)
    assert [r.context for r in recorder.responses] == [0, 1]
    assert [(e.context, why) for e, why in recorder.expired] == [(2, "connection lost")]


async def test_receiver_gets_receipts_and_acknowledges_them(smsc: Smsc) -> None:
    receiver = Recorder()
    rx = await connect(settings(smsc.port, kind=BindKind.RECEIVER), receiver)
    sender = Recorder()
    tx = await connect(settings(smsc.port), sender)
    for _ in range(5):
        tx.submit(SubmitSm(destination_addr="33600000001", registered_delivery=1))
    await receiver.wait(lambda: len(receiver.requests) == 5)
    ids = {r.pdu.message_id for r in sender.responses}
    assert {pdu.tlv(Tag.receipted_message_id) for pdu in receiver.requests} == ids
    async with asyncio.timeout(5):  # our acknowledgements reach the simulator
        while smsc.counters.deliver_sm_acked < 5:
            await asyncio.sleep(0.01)
    assert smsc.counters.deliver_sm_acked == 5
    for conn in (rx, tx):
        conn.close()


async def test_verbose_trace_masks_the_password(smsc: Smsc) -> None:
    with structlog.testing.capture_logs() as logs:
        conn = await connect(settings(smsc.port, verbose_trace=True), Recorder())
        conn.close()
        await conn.closed
    traced = [entry for entry in logs if entry["event"] == "smpp.pdu.out"]
    assert traced and "password='********'" in traced[0]["pdu"]
    assert all("secret" not in repr(entry) for entry in logs)


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "smsc.pem", folder / "smsc.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def tls_proxy(certificate: tuple[Path, Path], target_port: int) -> tuple[asyncio.Server, int]:
    """TLS in front of the simulator: what an SMSC with SMPP over TLS looks like."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def test_tls_verifies_the_certificate_unless_told_not_to(
    smsc: Smsc, certificate: tuple[Path, Path]
) -> None:
    server, port = await tls_proxy(certificate, smsc.port)
    # verification on, unknown CA: refused
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(settings(port, tls=True), Recorder())
    # verification on, the CA given: bound
    conn = await connect(settings(port, tls=True, tls_ca_file=str(certificate[0])), Recorder())
    assert conn.is_bound
    conn.close()
    # verification skipped: bound, with a warning at every connect
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            conn = await connect(settings(port, tls=True, tls_verify=False), Recorder())
            assert conn.is_bound
            conn.close()
    warnings = [e for e in logs if e["event"] == "smpp.tls_verification_skipped"]
    assert len(warnings) == 2 and warnings[0]["log_level"] == "warning"
    server.close()


async def test_stop_waits_for_answers_then_unbinds(smsc: Smsc) -> None:
    smsc.update_config(resp_delay_ms=200)
    recorder = Recorder()
    client = SmppClient(settings(smsc.port), recorder)
    task = asyncio.create_task(client.run())
    conn = await client.wait_ready()
    for i in range(5):
        conn.submit(SubmitSm(destination_addr="33600000001"), context=i)
    await client.stop(drain_timeout=5)
    await task
    assert len(recorder.responses) == 5 and not recorder.expired
    assert smsc.counters.unbinds == 1
    assert S.ESME_ROK == 0


async def test_gsm7_ucs2_and_multipart_messages_get_their_receipts(smsc: Smsc) -> None:
    """What smpplib does in test_simulator_smpplib.py, done by our own client and text code."""
    from smsmta.smpp.constants import EsmClass
    from smsmta.smpp.receipt import Outcome, ReceiptRules, interpret
    from smsmta.smpp.text import encode_message

    recorder = Recorder()
    conn = await connect(settings(smsc.port, kind=BindKind.TRANSCEIVER), recorder)
    texts = {
        "gsm7": "Hello {world} with €uro and ^escapes^",
        "ucs2": "Привет, мир 😀",
        "multipart": "Long message, " * 30,
    }
    for name, text in texts.items():
        encoded = encode_message(text, reference=len(name))
        for index, part in enumerate(encoded.parts):
            conn.submit(
                SubmitSm(
                    destination_addr="33600000001",
                    esm_class=EsmClass.UDHI if encoded.udh else 0,
                    data_coding=encoded.data_coding,
                    registered_delivery=1 if index == 0 else 0,
                    short_message=part,
                ),
                context=(name, encoded.data_coding, len(encoded.parts)),
            )
    await recorder.wait(lambda: len(recorder.responses) == 1 + 1 + 3)
    first_parts = {}
    for response in recorder.responses:
        name, coding, parts = response.context
        first_parts.setdefault(name, (response.pdu.message_id, coding, parts))
    assert {name: (coding, parts) for name, (_, coding, parts) in first_parts.items()} == {
        "gsm7": (0, 1),
        "ucs2": (8, 1),
        "multipart": (0, 3),
    }
    await recorder.wait(lambda: len(recorder.requests) == 3)  # one receipt per message
    rules = ReceiptRules.build("Sim")
    receipts = [interpret(pdu.short_message, pdu.tlvs, rules) for pdu in recorder.requests]
    assert {r.provider_id for r in receipts} == {mid for mid, _, _ in first_parts.values()}
    assert {r.outcome for r in receipts} == {Outcome.DELIVERED}
    conn.close()


async def test_tls_verification_failure_names_the_account_and_never_binds(
    smsc: Smsc, certificate: tuple[Path, Path]
) -> None:
    """Through SmppClient, as the services run it: an error at every attempt, no bind."""
    server, port = await tls_proxy(certificate, smsc.port)
    recorder = Recorder()
    client = SmppClient(settings(port, tls=True, name="acme_sms"), recorder)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(client.run())
        async with asyncio.timeout(20):
            while client.reconnects < 2:
                await asyncio.sleep(0.02)
        await client.stop(0)
        await task
    failures = [e for e in logs if e["event"] == "smpp.bind_failed"]
    assert len(failures) >= 2 and recorder.bound == 0 and smsc.counters.binds_total == 0
    for failure in failures:
        assert failure["log_level"] == "error"
        assert "account 'acme_sms'" in failure["error"]
        assert "certificate" in failure["error"] and f"127.0.0.1:{port}" in failure["error"]
        assert "self-signed" in failure["error"] or "verify" in failure["error"]
    server.close()


async def test_skipped_tls_verification_warns_at_every_reconnect(
    smsc: Smsc, certificate: tuple[Path, Path]
) -> None:
    server, port = await tls_proxy(certificate, smsc.port)
    recorder = Recorder()
    client = SmppClient(settings(port, tls=True, tls_verify=False, name="acme_sms"), recorder)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(client.run())
        for connects in range(1, 4):
            await recorder.wait(lambda n=connects: recorder.bound == n)
            assert client.connection is not None
            if connects < 3:
                client.connection.abort("test: cut the link")  # the client reconnects
        await client.stop(0)
        await task
    warnings = [e for e in logs if e["event"] == "smpp.tls_verification_skipped"]
    assert recorder.bound == 3 and len(warnings) == 3  # one per connect, not once
    assert all(w["log_level"] == "warning" and w["account"] == "acme_sms" for w in warnings)
    server.close()
