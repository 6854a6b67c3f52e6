"""What the simulator writes on its own: receipt pieces, MO parts, garbage; PDU records.

What it does: the pure builders behind `Smsc`. `Outcome` holds a message's fate with the
Annex B text and TLVs of its receipt, computed once per failure stat; `receipt_pdu` writes
the receipt, with the dates of `WallClock` and the ``Text:`` of `preview`; `mo_parts`
turns an injected MO into its deliver_sm parts; `garbage` makes the malformed bytes of
`GARBAGE_KINDS`; `id_maker` gives message ids; `recorded_pdu` is a request as
`record_pdus` keeps it.

Contract: pure functions of their arguments (the random source of `garbage` and the
clock's offset are passed in; `WallClock` only caches its last minute). A bad MO argument
raises ValueError naming it.

Touches: nothing.
"""

from __future__ import annotations

import random
import struct
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from smsmta.simulator.config import STAT_STATES
from smsmta.smpp.constants import CommandId, EsmClass, MessageState, Npi, Tag, Ton
from smsmta.smpp.pdu import DeliverSm, Pdu
from smsmta.smpp.text import DEFAULT_MAPPING, decode_short_message, encode_message

if TYPE_CHECKING:
    from smsmta.simulator.state import Message

#: sequence_number of the first garbage PDU: far above what our sessions number their own
#: requests.
GARBAGE_SEQUENCE = 0x7FFFFF00

# Characters an Annex B "Text:" preview keeps: the same code in ASCII and in GSM 03.38.
_PREVIEW_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !\"#%&'()*+,-./:;<=>?"
)

# The same, as a bytes.translate table: every other octet becomes "?".
_PREVIEW_TABLE = bytes(octet if chr(octet) in _PREVIEW_SAFE else 0x3F for octet in range(256))
_ONE_OCTET_CODINGS = frozenset({0, 1, 3})  # GSM7 unpacked, IA5, Latin-1

# TLV tags as plain ints on the hot path: hashing an IntEnum member runs Enum.__hash__ in
# Python (0.4 us), and the codec looks every tag up in a dict.
MESSAGE_PAYLOAD = int(Tag.message_payload)
MESSAGE_STATE = int(Tag.message_state)
NETWORK_ERROR_CODE = int(Tag.network_error_code)
RECEIPTED_MESSAGE_ID = int(Tag.receipted_message_id)
USER_MESSAGE_REFERENCE = int(Tag.user_message_reference)


def preview(body: bytes, data_coding: int, esm_class: int) -> bytes:
    """The first 20 characters of an MT for a receipt's ``Text:``, in ASCII = GSM 03.38."""
    if data_coding in _ONE_OCTET_CODINGS and not esm_class & EsmClass.UDHI:
        head = body[:20]
        if 0x1B not in head:  # no GSM escape: one octet is one character
            return head.translate(_PREVIEW_TABLE)
    try:
        udhi = bool(esm_class & EsmClass.UDHI)
        text = decode_short_message(body, data_coding, udhi=udhi).text
    except ValueError:
        return b""
    return "".join(ch if ch in _PREVIEW_SAFE else "?" for ch in text[:20]).encode("ascii")


class Outcome(NamedTuple):
    """A message's fate, with the receipt pieces it implies, computed once."""

    stat: str
    err: int
    state: MessageState
    dlvrd: bytes  # the Annex B text between the id and the submit date
    stat_err: bytes  # the Annex B text between the done date and the Text: preview
    tlvs: tuple[tuple[int, Any], ...]  # message_state (+ network_error_code on failure)

    @classmethod
    def of(cls, stat: str, err: int) -> Outcome:
        state = STAT_STATES[stat]
        delivered = state == MessageState.DELIVERED
        tlvs: tuple[tuple[int, Any], ...] = ((MESSAGE_STATE, int(state)),)
        if not delivered:  # network type 3 (GSM), then the error code on two octets
            tlvs += ((NETWORK_ERROR_CODE, bytes((3, err >> 8, err & 0xFF))),)
        return cls(
            stat,
            err,
            state,
            f" sub:001 dlvrd:{'001' if delivered else '000'} submit date:".encode(),
            f" stat:{stat} err:{err:03d} Text:".encode(),
            tlvs,
        )


DELIVERED = Outcome.of("DELIVRD", 0)
CANCELLED = Outcome.of("DELETED", 0)


class WallClock:
    """Loop times as the UTC dates receipts and query_sm_resp carry: wall = loop + `offset`."""

    __slots__ = ("_minute", "_text", "offset")

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self._minute = -1
        self._text = b""

    def date(self, loop_time: float) -> bytes:
        """YYMMDDhhmm (UTC) of a loop time, cached per minute."""
        minute = int((self.offset + loop_time) // 60)
        if minute != self._minute:
            self._minute = minute
            self._text = time.strftime("%y%m%d%H%M", time.gmtime(minute * 60)).encode()
        return self._text

    def smpp_time(self, loop_time: float) -> str:
        """SMPP absolute time (YYMMDDhhmmsstnnp, UTC) of a loop time."""
        wall = self.offset + loop_time
        tenths = int(wall * 10) % 10
        return time.strftime("%y%m%d%H%M%S", time.gmtime(wall)) + f"{tenths}00+"


def receipt_pdu(message: Message, outcome: Outcome, text_id: str, clock: WallClock) -> Pdu:
    """The Annex B receipt deliver_sm of `message` with `outcome`, its id written `text_id`."""
    mt = message.pdu
    text = b"".join(
        (
            b"id:",
            text_id.encode("ascii"),
            outcome.dlvrd,  # " sub:001 dlvrd:00x submit date:"
            clock.date(message.submitted),
            b" done date:",
            clock.date(message.done),
            outcome.stat_err,  # " stat:XXXXXXX err:nnn Text:"
            preview(message.body, mt.data_coding, mt.esm_class),
        )
    )
    return DeliverSm(
        source_addr_ton=mt.dest_addr_ton,
        source_addr_npi=mt.dest_addr_npi,
        source_addr=mt.destination_addr[:20],
        dest_addr_ton=mt.source_addr_ton,
        dest_addr_npi=mt.source_addr_npi,
        destination_addr=mt.source_addr[:20],
        esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=text,
        tlvs=((RECEIPTED_MESSAGE_ID, message.message_id), *outcome.tlvs),
    )


MO_ENCODINGS = {0: "gsm7", 1: "ascii", 3: "latin1", 8: "ucs2"}


def mo_address(address: str) -> tuple[int, int, str]:
    """TON, NPI and digits of an MO address: ``+33...`` is international E.164."""
    if address.startswith("+"):
        return Ton.INTERNATIONAL, Npi.ISDN, address[1:]
    if address.isdigit():
        return Ton.UNKNOWN, Npi.ISDN, address
    return Ton.ALPHANUMERIC, Npi.UNKNOWN, address


def id_maker(id_format: str, rng: random.Random) -> Callable[[int], str]:
    """The message id of the nth accepted message, in `id_format` (one of `ID_FORMATS`).

    decimal: ``str(n)``; hex: the same number in upper-case hex; hexstring: the decimal
    id's ASCII octets written in hex; uuid: a random version 4 UUID drawn from `rng`.
    """
    if id_format == "hex":
        return "{:X}".format
    if id_format == "hexstring":
        return lambda n: str(n).encode().hex()
    if id_format == "uuid":
        return lambda n: str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return str


def mo_parts(
    source: str, destination: str, text: str, data_coding: int | None, reference: int
) -> list[Pdu]:
    """The deliver_sm of an MO from `source` to `destination` (see `Smsc.queue_mo`).

    `data_coding` None picks GSM7 (0), else UCS-2 (8); 0, 1, 3 or 8 force GSM7, IA5,
    Latin-1 or UCS-2. A text longer than one SMS goes in several deliver_sm with a
    concatenation UDH (esm_class 0x40) numbered `reference`. Raises ValueError naming a
    bad argument.
    """
    if not isinstance(source, str) or not isinstance(destination, str):
        raise ValueError("source and destination must be strings")
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    source_ton, source_npi, source_addr = mo_address(source)
    dest_ton, dest_npi, dest_addr = mo_address(destination)
    for name, value in (("source", source_addr), ("destination", dest_addr)):
        if not 0 < len(value) <= 20:
            raise ValueError(f"{name} address must be 1 to 20 characters, got {value!r}")
    if data_coding is None:
        mapping = DEFAULT_MAPPING
    elif type(data_coding) is int and data_coding in MO_ENCODINGS:
        mapping = ((data_coding, MO_ENCODINGS[data_coding]),)
    else:
        raise ValueError(f"data_coding must be one of {sorted(MO_ENCODINGS)}, not {data_coding!r}")
    encoded = encode_message(text, mapping, reference=reference)
    esm_class = EsmClass.UDHI if encoded.udh else 0
    return [
        DeliverSm(
            source_addr_ton=source_ton,
            source_addr_npi=source_npi,
            source_addr=source_addr,
            dest_addr_ton=dest_ton,
            dest_addr_npi=dest_npi,
            destination_addr=dest_addr,
            esm_class=esm_class,
            data_coding=encoded.data_coding,
            short_message=part,
        )
        for part in encoded.parts
    ]


def garbage(kind: str, sequence: int, random_bytes: Callable[[int], bytes]) -> bytes:
    """One piece of `kind` (see `GARBAGE_KINDS`), numbered `sequence` when it has a header."""
    if kind == "bad_length":
        return struct.pack(">IIII", 8, CommandId.deliver_sm, 0, sequence)
    if kind == "unknown_command":
        return struct.pack(">IIII", 16, 0x000000AB, 0, sequence)
    if kind == "truncated":
        # service_type "", source_addr TON/NPI, then source_addr without its NUL: the
        # body ends inside a C-octet string.
        body = b"\x00\x01\x01+3361234"
        return struct.pack(">IIII", 16 + len(body), CommandId.deliver_sm, 0, sequence) + body
    return random_bytes(64)


def _json_ready(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_json_ready(item) for item in value]
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


def recorded_pdu(pdu: Pdu, status: int) -> dict[str, Any]:
    """A request as `record_pdus` keeps it: its fields by name, JSON-ready."""
    fields = pdu.asdict()
    tlvs = fields.pop("tlvs", ())
    record: dict[str, Any] = {"pdu": pdu.COMMAND_ID.name.lower(), "status": status}
    for name, value in fields.items():
        if name in ("command_id", "command_status", "sequence_number"):
            continue
        record[name] = "********" if name == "password" else _json_ready(value)
    record["tlvs"] = {f"0x{tag:04X}": _json_ready(value) for tag, value in tlvs}
    return record
