"""SMPP 3.4 mutations for the fuzzer (smsmta.testing.smpp_fuzzer), and what each must get back.

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

Every case has its own sequence number, from FIRST_CASE up. Pure: touches nothing.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from smsmta.smpp.codec import DEFAULT_MAX_COMMAND_LENGTH, decode, encode
from smsmta.smpp.constants import RESPONSE_BIT, CommandId, EsmClass, Tag, status_name
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    PDU_CLASSES,
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

C = CommandId
_HEADER = struct.Struct(">IIII")
PROBE_BASE = 0x70000000  # sequence numbers of the enquire_link probes
FIRST_CASE = 1000  # sequence numbers of the cases start here (the peers' own stay lower)

#: What a peer does with a request it may receive when bound (SMPP 3.4 4.x), by role.
#: "handler": answered by the service; "session": answered status 0 by the session.
ESME_RX_TAKES: dict[int, str | None] = {
    C.deliver_sm: "handler",
    C.data_sm: "handler",
    C.alert_notification: None,
}
ESME_TX_TAKES: dict[int, str | None] = {}  # a transmitter takes no deliver_sm (RINVBNDSTS)
SMSC_TAKES: dict[int, str | None] = {
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
        status = {None: "any", -1: "an error"}.get(self.status)
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
            assert expected is not None  # a frame under 16 bytes says its answer by hand
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


def make_cases(seed: int, peer: Peer, count: int) -> list[Case]:
    mutator = Mutator(seed, peer)
    return [mutator.case() for _ in range(count)]
