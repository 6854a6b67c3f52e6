"""Fuzzing a live SMPP session: mutated PDUs over real sockets, and what must come back.

What it does:

- `Mutator` (seeded `random.Random`) turns valid PDUs (deliver_sm, submit_sm_resp,
  enquire_link, unbind towards an ESME; submit_sm, enquire_link, unbind, deliver_sm_resp
  towards an SMSC) into `Case`s: bit flips, truncation, command_length under 16 or huge,
  unknown command_ids, responses for unknown sequence numbers, invalid TLVs, C-Octet
  Strings without their NUL, over-long fields, odd data_coding values, garbage bytes.
- `expect(frame, peer)`: what SMPP 3.4 says the peer answers (sections 2.3 and 4.3
  generic_nack, 5.1.3 command_status): generic_nack ESME_RINVCMDLEN and the connection
  reset when command_length is unusable (framing lost); generic_nack ESME_RINVCMDID for an
  unknown command_id or a request the peer's role never takes (a bind or a submit_sm sent
  to an ESME, a deliver_sm sent to an SMSC), whatever its body; the operation's own ``_resp``
  with the error status for a body it cannot decode; nothing for a response (stray) or
  a request without response. The targeted mutations also carry the answer written by
  hand from the spec, and `Mutator` checks both agree.
- `FakeSmsc`: a raw asyncio SMPP server that binds our ESMEs (our client, the SMS
  process, the MTA) and answers what they send; `fuzz_esme` sends the cases on the live
  bound connection, re-waiting for the bind after each reset; `fuzz_smsc` does the same
  as a raw-socket ESME against an SMSC (our simulator).
- `Tally`: PDUs sent by mutation, answers by kind (generic_nack by status, *_resp by
  status, connection closes, no answer), mismatches and crashes; `table()` prints it.

Cases that may close the connection (framing lost, a valid unbind) are sent alone and
after every answer due so far has come back; the others go in batches, each followed by
an enquire_link probe whose answer says the peer has read the batch. Answers are matched
by sequence number (every case has its own). Touches: sockets on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from smsmta.smpp.aio import BindKind, BindSettings
from smsmta.smpp.codec import DEFAULT_MAX_COMMAND_LENGTH, Framer, decode, encode
from smsmta.smpp.constants import RESPONSE_BIT, CommandId, EsmClass, Tag, status_name
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    PDU_CLASSES,
    BindTransceiver,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    error_response,
)
from smsmta.smpp.session import Timeouts

C = CommandId
_HEADER = struct.Struct(">IIII")
PROBE_BASE = 0x70000000  # sequence numbers of the enquire_link probes
FIRST_CASE = 1000  # sequence numbers of the cases start here (the peers' own stay lower)

#: What a peer does with a request it may receive when bound (SMPP 3.4 4.x), by role.
#: "handler": answered by the service; "session": answered status 0 by the session.
ESME_RX_TAKES = {C.deliver_sm: "handler", C.data_sm: "handler", C.alert_notification: None}
ESME_TX_TAKES: dict[int, str | None] = {}  # a transmitter takes no deliver_sm (RINVBNDSTS)
SMSC_TAKES = {
    C.submit_sm: "handler",
    C.submit_multi: "handler",
    C.data_sm: "handler",
    C.query_sm: "handler",
    C.cancel_sm: "handler",
    C.replace_sm: "handler",
}
BINDS = (C.bind_transmitter, C.bind_receiver, C.bind_transceiver)
ESME_FOREIGN = frozenset(
    {*BINDS, C.submit_sm, C.submit_multi, C.query_sm, C.cancel_sm, C.replace_sm}
)
SMSC_FOREIGN = frozenset({C.deliver_sm, C.alert_notification, C.outbind})


class Peer(NamedTuple):
    """The side being fuzzed and its bind: what it takes, what it refuses."""

    name: str
    role: str  # "esme" | "smsc"
    takes: dict[int, str | None]
    ok_by_handler: bool = True  # the handler answers a valid request with status 0


ESME_RX = Peer("esme-rx", "esme", ESME_RX_TAKES)
ESME_TX = Peer("esme-tx", "esme", ESME_TX_TAKES)
SMSC_TRX = Peer("smsc", "smsc", SMSC_TAKES, ok_by_handler=False)


class Expect(NamedTuple):
    """The answer due: `kind` is "answer", "none" or "close" (generic_nack then reset).

    For "answer": `command_id` of the answer and its `status`; status None means "any
    status" (a valid request the service judges), -1 "any error status".
    """

    kind: str
    command_id: int | None = None
    status: int | None = None

    def describe(self) -> str:
        if self.kind != "answer":
            return self.kind
        status = {None: "any", -1: "an error"}.get(self.status)  # type: ignore[arg-type]
        return f"{_command_name(self.command_id)} {status or status_name(self.status or 0)}"


NONE = Expect("none")
ANY_ERROR = -1


def _command_name(command_id: int | None) -> str:
    try:
        return CommandId(command_id).name  # type: ignore[arg-type]
    except ValueError:
        return f"0x{command_id:08X}"


def header(frame: bytes) -> tuple[int, int, int, int]:
    return _HEADER.unpack_from(frame)


def expect(frame: bytes, peer: Peer, max_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> Expect:
    """What SMPP 3.4 makes `peer` (bound) answer to `frame` (one whole PDU as sent)."""
    length, command_id, _, _ = header(frame)
    if length < 16 or length > max_length:
        return Expect("close", C.generic_nack, S.ESME_RINVCMDLEN)
    if command_id not in PDU_CLASSES:
        return Expect("answer", C.generic_nack, S.ESME_RINVCMDID)
    foreign = ESME_FOREIGN if peer.role == "esme" else SMSC_FOREIGN
    if command_id in foreign:  # never sent to this role: generic_nack, whatever the body
        if PDU_CLASSES[command_id].RESPONSE is None:
            return NONE
        return Expect("answer", C.generic_nack, S.ESME_RINVCMDID)
    try:
        pdu = decode(frame)
    except RemoteProtocolError as error:
        answer = error_response(error)
        if answer is None:
            return NONE
        return Expect("answer", answer.command_id, answer.command_status)
    if command_id & RESPONSE_BIT:
        return NONE  # a response we are not waiting for: a stray, never answered
    if command_id == C.enquire_link:
        return Expect("answer", C.enquire_link_resp, S.ESME_ROK)
    if command_id == C.unbind:
        return Expect("close", C.unbind_resp, S.ESME_ROK)
    if command_id in BINDS:
        return Expect("answer", command_id | RESPONSE_BIT, S.ESME_RALYBND)
    if command_id in peer.takes:
        if peer.takes[command_id] is None or pdu.RESPONSE is None:
            return NONE
        status = S.ESME_ROK if peer.ok_by_handler else None
        return Expect("answer", command_id | RESPONSE_BIT, status)
    if pdu.RESPONSE is None:
        return NONE  # outbind, alert_notification: nothing to answer with
    return Expect("answer", command_id | RESPONSE_BIT, S.ESME_RINVBNDSTS)


@dataclass
class Case:
    mutation: str
    frame: bytes
    sequence_number: int
    expected: Expect


def _with_header(body: bytes, command_id: int, seq: int, status: int = 0) -> bytes:
    return _HEADER.pack(16 + len(body), command_id, status, seq) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


class Mutator:
    """Seeded generator of mutated PDUs for one peer; see the module docstring."""

    def __init__(self, seed: int, peer: Peer) -> None:
        self.random = random.Random(seed)
        self.peer = peer
        self.next_seq = FIRST_CASE
        self.used: set[int] = set()

    # --- valid templates ---------------------------------------------------------------

    def _receipt(self, seq: int) -> Pdu:
        r = self.random
        msg_id = f"{r.randrange(10**9):d}"
        text = (
            f"id:{msg_id} sub:001 dlvrd:001 submit date:2601010000 done date:2601010001"
            f" stat:{r.choice(['DELIVRD', 'UNDELIV', 'EXPIRED', 'ACCEPTD'])} err:000 Text:hi"
        )
        return DeliverSm(
            sequence_number=seq,
            source_addr="33612345678",
            destination_addr="38000",
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=text.encode(),
            tlvs=((Tag.receipted_message_id, msg_id), (Tag.message_state, 2)),
        )

    def _mo(self, seq: int) -> Pdu:
        r = self.random
        return DeliverSm(
            sequence_number=seq,
            source_addr=f"336{r.randrange(10**8):08d}",
            destination_addr="38000",
            data_coding=r.choice([0, 0, 3, 8]),
            short_message=r.choice([b"HELLO", b"STOP please", "été".encode("latin-1")]),
        )

    def _templates(self, seq: int) -> list[Pdu]:
        if self.peer.role == "esme":
            return [
                self._receipt(seq),
                self._mo(seq),
                SubmitSmResp(sequence_number=seq, message_id="12345"),
                EnquireLink(sequence_number=seq),
                Unbind(sequence_number=seq),
            ]
        return [
            SubmitSm(
                sequence_number=seq,
                source_addr="TEST",
                destination_addr=f"336{self.random.randrange(10**8):08d}",
                short_message=b"hello",
            ),
            EnquireLink(sequence_number=seq),
            Unbind(sequence_number=seq),
            DeliverSmResp(sequence_number=seq),
        ]

    def _sm_template(self, seq: int) -> Pdu:
        if self.peer.role == "esme":
            return self.random.choice([self._receipt, self._mo])(seq)
        return self._templates(seq)[0]

    # --- mutations ---------------------------------------------------------------------

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def case(self) -> Case:
        """One mutated PDU with the answer due."""
        r = self.random
        while True:
            seq = self._take_seq()
            name, mutate = r.choices(_MUTATIONS, weights=_WEIGHTS)[0]
            frame, by_hand = mutate(self, seq)
            if len(frame) >= 16:
                seq = header(frame)[3]
                if seq in self.used or seq >= PROBE_BASE or seq < FIRST_CASE:
                    continue  # a flipped sequence number that would be ambiguous
            self.used.add(seq)
            expected = expect(frame, self.peer) if len(frame) >= 16 else by_hand
            if by_hand is not None and by_hand != expected:
                raise AssertionError(
                    f"{name}: the spec says {by_hand}, the codec's verdict is {expected}:"
                    f" {frame.hex()}"
                )
            return Case(name, frame, seq, expected)

    def _bit_flip(self, seq: int) -> tuple[bytes, Expect | None]:
        templates = self._templates(seq)
        weights = [1.0 if t.command_id != C.unbind else 0.15 for t in templates]
        frame = bytearray(encode(self.random.choices(templates, weights)[0]))
        for _ in range(self.random.randint(1, 4)):
            bit = self.random.randrange(32, len(frame) * 8)  # command_length left alone
            frame[bit // 8] ^= 1 << (bit % 8)
        return bytes(frame), None

    def _truncate(self, seq: int) -> tuple[bytes, Expect | None]:
        pdu = self._sm_template(seq)
        frame = encode(pdu)
        cut = self.random.randrange(17, len(frame) - 1)
        body = frame[16:cut]
        return _with_header(body, pdu.command_id, seq), None

    def _length_under_16(self, seq: int) -> tuple[bytes, Expect | None]:
        frame = encode(self.random.choice(self._templates(seq)))
        bad = struct.pack(">I", self.random.randrange(16))
        return bad + frame[4:], Expect("close", C.generic_nack, S.ESME_RINVCMDLEN)

    def _length_huge(self, seq: int) -> tuple[bytes, Expect | None]:
        frame = encode(self.random.choice(self._templates(seq)))
        length = self.random.choice([DEFAULT_MAX_COMMAND_LENGTH + 1, 0x7FFFFFFF, 0xFFFFFFFF])
        return struct.pack(">I", length) + frame[4:], Expect(
            "close", C.generic_nack, S.ESME_RINVCMDLEN
        )

    def _unknown_command(self, seq: int) -> tuple[bytes, Expect | None]:
        command_id = 0x00000010
        while command_id in PDU_CLASSES:
            command_id = self.random.choice([self.random.getrandbits(32), 0x10, 0x8000000F])
        body = self.random.randbytes(self.random.randrange(0, 40))
        return _with_header(body, command_id, seq), Expect(
            "answer", C.generic_nack, S.ESME_RINVCMDID
        )

    def _stray_response(self, seq: int) -> tuple[bytes, Expect | None]:
        r = self.random
        pdu = r.choice(
            [
                SubmitSmResp(sequence_number=seq, message_id="999"),
                DeliverSmResp(sequence_number=seq),
                EnquireLinkResp(sequence_number=seq),
                UnbindResp(sequence_number=seq),
                PDU_CLASSES[C.generic_nack](sequence_number=seq, command_status=S.ESME_RSYSERR),
                PDU_CLASSES[C.bind_transmitter_resp](sequence_number=seq, system_id="X"),
            ]
        )
        return encode(pdu), NONE

    def _bad_tlv(self, seq: int) -> tuple[bytes, Expect | None]:
        r = self.random
        pdu = self._sm_template(seq)
        body = encode(pdu.replace(tlvs=()))[16:]
        choice = r.randrange(4)
        if choice == 0:  # TLV header cut short
            tail, status = r.randbytes(r.randint(1, 3)), S.ESME_RINVOPTPARSTREAM
        elif choice == 1:  # value running past the end
            tail = struct.pack(">HH", 0x1400, r.randint(10, 500)) + b"abc"
            status = S.ESME_RINVOPTPARSTREAM
        elif choice == 2:  # a known fixed-length TLV with the wrong length
            tail, status = _tlv(Tag.message_state, b"\x02\x00"), S.ESME_RINVPARLEN
        else:  # a C-Octet String TLV with a NUL inside
            tail, status = _tlv(Tag.receipted_message_id, b"ab\0cd\0"), S.ESME_RINVOPTPARAMVAL
        return _with_header(body + tail, pdu.command_id, seq), self._request_answer(pdu, status)

    def _request_answer(self, pdu: Pdu, status: int) -> Expect:
        # a body that does not decode gets its operation's _resp, whatever the bind type
        return Expect("answer", pdu.command_id | RESPONSE_BIT, status)

    def _cstring_without_nul(self, seq: int) -> tuple[bytes, Expect | None]:
        pdu = self._sm_template(seq)
        # source_addr (max 21 octets with its NUL): 25 digits and no NUL, so it runs on
        # into the next fields
        rest = encode(pdu.replace(source_addr=""))[16 + 4 :]
        body = b"\0" + bytes((1, 1)) + b"4" * 25 + rest
        return _with_header(body, pdu.command_id, seq), self._request_answer(pdu, S.ESME_RINVSRCADR)

    def _overlong_field(self, seq: int) -> tuple[bytes, Expect | None]:
        pdu = self._sm_template(seq)
        fixed = encode(pdu.replace(destination_addr="X" * 20))
        # widen destination_addr to 30 characters + NUL by splicing the octets
        start = fixed.index(b"X" * 20)
        body = fixed[16:start] + b"9" * 30 + fixed[start + 20 :]
        return _with_header(body, pdu.command_id, seq), self._request_answer(pdu, S.ESME_RINVDSTADR)

    def _sm_length_past_end(self, seq: int) -> tuple[bytes, Expect | None]:
        pdu = self._sm_template(seq).replace(short_message=b"abc", tlvs=())
        frame = encode(pdu)
        body = bytearray(frame[16:])
        body[-4] = self.random.randint(10, 254)  # sm_length, then the 3 octets
        return _with_header(bytes(body), pdu.command_id, seq), self._request_answer(
            pdu, S.ESME_RINVMSGLEN
        )

    def _odd_data_coding(self, seq: int) -> tuple[bytes, Expect | None]:
        pdu = self._sm_template(seq).replace(
            data_coding=self.random.choice([0x05, 0x0C, 0x0F, 0x7F, 0xBF, 0xFF]),
            short_message=self.random.randbytes(self.random.randint(0, 140)),
        )
        return encode(pdu), None  # valid SMPP: the service decides

    def _garbage(self, seq: int) -> tuple[bytes, Expect | None]:
        """Random octets in a frame with a usable command_length and a valid command_id."""
        command_id = self.random.choice(list(PDU_CLASSES))
        body = self.random.randbytes(self.random.randrange(0, 300))
        return _with_header(body, command_id, seq, self.random.choice([0, 0, 8])), None


_MUTATIONS: list[tuple[str, Callable[[Mutator, int], tuple[bytes, Expect | None]]]] = [
    ("bit_flip", Mutator._bit_flip),
    ("truncated", Mutator._truncate),
    ("length_under_16", Mutator._length_under_16),
    ("length_huge", Mutator._length_huge),
    ("unknown_command_id", Mutator._unknown_command),
    ("stray_response", Mutator._stray_response),
    ("invalid_tlv", Mutator._bad_tlv),
    ("cstring_without_nul", Mutator._cstring_without_nul),
    ("overlong_field", Mutator._overlong_field),
    ("sm_length_past_end", Mutator._sm_length_past_end),
    ("odd_data_coding", Mutator._odd_data_coding),
    ("garbage", Mutator._garbage),
]
# framing-lost cases cost a reconnect each: rare, but always some
_WEIGHTS = [30, 8, 0.4, 0.4, 8, 8, 8, 6, 6, 6, 6, 14]


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What was sent and what came back, for one target."""

    target: str
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    closes: int = 0
    rebinds: int = 0
    crashes: int = 0

    def record(self, case: Case, got: list[Pdu], closed: bool) -> None:
        self.sent[case.mutation] += 1
        if closed:
            self.closes += 1
        if not got:
            self.answers["no answer" + (" (connection closed)" if closed else "")] += 1
        for pdu in got:
            kind = pdu.command_id.name
            if pdu.command_id == C.generic_nack or pdu.command_status:
                kind += f" {status_name(pdu.command_status)}"
            elif pdu.command_id & RESPONSE_BIT:
                kind += " ESME_ROK"
            self.answers[kind] += 1
        problem = _mismatch(case.expected, got, closed)
        if problem:
            self.mismatches.append(
                f"{case.mutation} seq={case.sequence_number}: expected {case.expected.describe()},"
                f" {problem}; frame {case.frame[:80].hex()}"
            )

    def table(self) -> str:
        lines = [f"== {self.target}: {sum(self.sent.values())} mutated PDUs sent"]
        lines += [f"   sent {name:<22} {n:>7}" for name, n in sorted(self.sent.items())]
        lines += [f"   got  {name:<48} {n:>7}" for name, n in sorted(self.answers.items())]
        lines.append(
            f"   connection closes {self.closes}, re-binds {self.rebinds},"
            f" crashes {self.crashes}, mismatches {len(self.mismatches)}"
        )
        lines += [f"   MISMATCH {m}" for m in self.mismatches[:20]]
        return "\n".join(lines)


def _mismatch(expected: Expect, got: list[Pdu], closed: bool) -> str | None:
    if expected.kind == "none":
        if got:
            return f"got {[repr(p) for p in got]}"
        return "connection closed" if closed else None
    if len(got) != 1:
        return f"got {len(got)} answers {[repr(p)[:120] for p in got]}"
    pdu = got[0]
    if pdu.command_id != expected.command_id:
        return f"got {pdu.command_id.name} {status_name(pdu.command_status)}"
    status = expected.status
    if status == ANY_ERROR and pdu.command_status == 0:
        return "got status ESME_ROK"
    if status not in (None, ANY_ERROR) and pdu.command_status != status:
        return f"got status {status_name(pdu.command_status)}"
    if expected.kind == "close" and not closed:
        return "the connection stayed open"
    if expected.kind == "answer" and closed:
        return "the connection was closed"
    return None


# --------------------------------------------------------------------------------------------
# The live connection both drivers use
# --------------------------------------------------------------------------------------------


class Link:
    """One connection's reading side: answers by sequence number, requests answered."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_request: Callable[[Link, Pdu], None],
    ) -> None:
        self.reader, self.writer = reader, writer
        self.on_request = on_request
        self.answers: dict[int, list[Pdu]] = {}
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.requests: list[Pdu] = []
        self.invalid: list[str] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        framer = Framer(0xFFFFFFFF)
        try:
            while data := await self.reader.read(65536):
                framer.feed(data)
                for frame in framer:
                    try:
                        pdu = decode(frame)
                    except RemoteProtocolError as error:  # our peers must send valid SMPP
                        self.invalid.append(f"{error}: {frame[:64].hex()}")
                        continue
                    if pdu.command_id & RESPONSE_BIT:
                        self.answers.setdefault(pdu.sequence_number, []).append(pdu)
                    else:
                        self.requests.append(pdu)
                        self.on_request(self, pdu)
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self.changed.set()
            self.writer.close()

    def send(self, data: bytes) -> None:
        if not self.closed.is_set():
            self.writer.write(data)

    async def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until condition() or the connection closes; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not condition() and not self.closed.is_set():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        self.writer.transport.abort()


def _answer_esme_request(link: Link, pdu: Pdu) -> None:
    """The fake SMSC's side: bind OK, submit_sm accepted, enquire_link, unbind."""
    if pdu.command_id in BINDS:
        link.send(encode(pdu.make_resp(system_id="FUZZSMSC")))
    elif pdu.command_id == C.submit_sm:
        link.send(encode(pdu.make_resp(message_id=f"F{pdu.sequence_number}")))
    elif pdu.RESPONSE is not None:
        link.send(encode(pdu.make_resp()))


class FakeSmsc:
    """A raw SMPP server on 127.0.0.1 that binds ESMEs; `link` is the latest bound one."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: list[Link] = []
        self.all_links: list[Link] = []
        self.bound = asyncio.Event()
        self.submits = 0
        #: answer that many submit_sm with a malformed submit_sm_resp (their sequence numbers)
        self.bad_submit_resps = 0
        self.bad_resp_sequences: list[int] = []

    async def __aenter__(self) -> FakeSmsc:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for link in self.all_links:
            with contextlib.suppress(Exception):
                link.abort()
        tasks = [link.task for link in self.all_links]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def on_request(link: Link, pdu: Pdu) -> None:
            if pdu.command_id == C.submit_sm:
                self.submits += 1
                if self.bad_submit_resps > 0:  # a message_id without its NUL, over 65 octets
                    self.bad_submit_resps -= 1
                    bad = _with_header(b"9" * 70, C.submit_sm_resp, pdu.sequence_number)
                    self.bad_resp_sequences.append(pdu.sequence_number)
                    link.send(bad)
                    return
            _answer_esme_request(link, pdu)
            if pdu.command_id in BINDS:
                self.links.append(link)
                self.bound.set()

        link = Link(reader, writer, on_request)
        self.all_links.append(link)
        await link.task

    async def bound_link(self, timeout: float) -> Link:
        """The latest bound, open connection (waits for a re-bind after a reset)."""
        async with asyncio.timeout(timeout):
            while True:
                if self.links and not self.links[-1].closed.is_set():
                    return self.links[-1]
                self.bound.clear()
                await self.bound.wait()


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------


async def _run(
    cases: list[Case],
    tally: Tally,
    get_link: Callable[[], Awaitable[Link]],
    *,
    batch: int = 40,
    timeout: float = 20.0,
) -> None:
    """Send `cases` on the link get_link() gives (re-asked after every close)."""
    probe = PROBE_BASE
    pending: list[tuple[Case, Link]] = []  # sent, answer not judged yet

    def answered(case: Case, link: Link) -> bool:
        return case.sequence_number in link.answers

    async def settle() -> None:
        """Judge every pending case once its due answer came (or its link closed)."""
        for case, link in pending:
            if case.expected.kind == "answer":
                await link.wait(lambda c=case, lk=link: answered(c, lk), timeout)
            got = link.answers.pop(case.sequence_number, [])
            tally.record(case, got, closed=link.closed.is_set() and not got)
        pending.clear()

    i = 0
    while i < len(cases):
        try:
            link = await get_link()
        except (TimeoutError, OSError) as error:
            tally.mismatches.append(
                f"no bound connection after {i} of {len(cases)} cases ({error!r}):"
                f" the peer is gone; last cases {[c.mutation for c in cases[max(0, i - 5) : i]]}"
            )
            await settle()
            return
        if cases[i].expected.kind == "close":
            await settle()
            case = cases[i]
            i += 1
            link.send(case.frame)
            await link.wait(lambda: False, timeout)  # until the peer resets the link
            closed = link.closed.is_set()
            got = link.answers.pop(case.sequence_number, [])
            tally.record(case, got, closed)
            if closed:
                tally.rebinds += 1
            continue
        chunk = []
        while i < len(cases) and len(chunk) < batch and cases[i].expected.kind != "close":
            chunk.append(cases[i])
            i += 1
        probe += 1
        link.send(b"".join(c.frame for c in chunk) + encode(EnquireLink(sequence_number=probe)))
        ok = await link.wait(lambda p=probe, lk=link: p in lk.answers, timeout)
        if not ok or link.closed.is_set():
            tally.mismatches.append(
                f"probe {probe} unanswered after {[c.mutation for c in chunk]}"
                f" (closed={link.closed.is_set()})"
            )
        link.answers.pop(probe, None)
        pending.extend((c, link) for c in chunk)
    await settle()


async def fuzz_esme(
    smsc: FakeSmsc, cases: list[Case], tally: Tally, *, timeout: float = 20.0
) -> None:
    """Send `cases` to whatever ESME is bound to `smsc`, waiting for re-binds."""

    async def get_link() -> Link:
        return await smsc.bound_link(timeout)

    await _run(cases, tally, get_link, timeout=timeout)


class EsmeLinks:
    """Raw-socket ESME connections to an SMSC: bind_transceiver, reconnect after a reset."""

    def __init__(self, host: str, port: int, system_id: str, password: str) -> None:
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password
        self.link: Link | None = None
        self.all_links: list[Link] = []
        self.connects = 0

    async def get(self, timeout: float = 20.0) -> Link:
        if self.link is not None and not self.link.closed.is_set():
            return self.link
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )

        def on_request(link: Link, pdu: Pdu) -> None:
            if pdu.RESPONSE is not None:  # receipts of what we submitted: acknowledged
                link.send(encode(pdu.make_resp()))

        link = Link(reader, writer, on_request)
        self.all_links.append(link)
        link.send(
            encode(
                BindTransceiver(sequence_number=1, system_id=self.system_id, password=self.password)
            )
        )
        await link.wait(lambda: 1 in link.answers, timeout)
        [bind_resp] = link.answers.pop(1)
        if bind_resp.command_status:
            raise ConnectionError(f"bind refused: {status_name(bind_resp.command_status)}")
        self.connects += 1
        self.link = link
        return link

    def close(self) -> None:
        if self.link is not None:
            self.link.abort()
            self.link.task.cancel()


async def fuzz_smsc(links: EsmeLinks, cases: list[Case], tally: Tally) -> None:
    """Send `cases` to an SMSC as a bound transceiver, re-binding after each reset."""
    await _run(cases, tally, links.get)
    tally.rebinds = links.connects - 1


def receiver_settings(port: int) -> BindSettings:
    """Our SmppClient's receiver bind to a FakeSmsc on `port`, quick to reconnect."""
    return BindSettings(
        host="127.0.0.1",
        port=port,
        system_id="fuzz",
        password="secret",
        kind=BindKind.RECEIVER,
        reconnect_delay=0.05,
        timeouts=Timeouts(response=5, bind=5, enquire_link_period=30, unbind=1),
        name="fuzz-client",
    )


def make_cases(seed: int, peer: Peer, count: int) -> list[Case]:
    mutator = Mutator(seed, peer)
    return [mutator.case() for _ in range(count)]
