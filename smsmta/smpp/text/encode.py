"""Encoding an MT text: pick the encoding from the account's mapping, split into SMS parts.

`encode_message(text, mapping, ...)` walks the account's encoding mapping in order and
returns an `EncodedMessage`: the first encoding that takes the whole text wins and sets
data_coding. A national encoding keeps its locking shift table only when it needs fewer
parts; each shift IE (0x24/0x25) goes in the UDH only when the text uses that table. With
transliteration each encoding is tried exactly, then with every missing character
replaced by its nearest equivalent, before the next one; a character without one moves
on; when nothing takes the text, `UnencodableText` names the character and its 0-based
index.

Long texts are split with a concatenation UDH (IE 0x00, or 0x08 with a 16-bit reference)
into parts of 153 GSM7 septets / 134 Latin-1 octets / 67 UTF-16 units (less when
shift-table IEs share the UDH). A part never ends between an escape and its character,
inside a surrogate pair or inside a transliteration. More than `max_parts` (never more
than 255) raises `TooManyParts`. In message_payload mode the whole text is one part for
the message_payload TLV.

Touches nothing.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from smsmta.smpp.text.base import (
    MAX_PARTS,
    PAYLOAD_MAX_OCTETS,
    PayloadTooLong,
    TooManyParts,
    UnencodableText,
)
from smsmta.smpp.text.charsets import (
    _CODECS,
    _COST_8,
    _COST_16,
    _ESC,
    _UNIT_NAMES,
    ENCODING_NAMES,
    Transliteration,
    _capacity,
    _Codec,
    _encode_basic,
    _Encoded,
)
from smsmta.smpp.text.udh import (
    IEI_CONCAT_8,
    IEI_CONCAT_16,
    _shift_ies,
    fill_bits_after,
    pack_septets,
)

DEFAULT_MAPPING: tuple[tuple[int, str], ...] = ((0, "gsm7"), (8, "ucs2"))
"""(data_coding, encoding name) in the order they are tried: GSM7 -> 0, then UCS-2 -> 8."""


class Rejection(NamedTuple):
    encoding: str
    """The mapping entry that could not take the text."""
    # the field shadows tuple.index(): callers read .index and compare with plain tuples
    index: int  # type: ignore[assignment]
    """0-based index of the first character it could not take (after transliteration;
    for a national encoding, in the table pair that got furthest)."""
    char: str


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """One MT ready for submit_sm.

    `parts` are short_message bodies, each including its UDH when `udh` is true (the caller
    sets esm_class UDHI 0x40). In message_payload mode `parts` is empty and `payload`
    holds the body for the message_payload TLV; `part_count` is then 1.
    """

    encoding: str
    data_coding: int
    udh: bool
    parts: tuple[bytes, ...]
    payload: bytes | None
    part_count: int
    units: int
    """Code units of the text: septets (GSM7, IA5), octets (Latin-1) or UTF-16 units."""
    part_capacity: int
    """Code units one part holds in the layout used (160 / 153 / 70 / 67 ...)."""
    part_ends: tuple[int, ...]
    """For each part, the index in the original text where it ends (exclusive)."""
    sent_text: str
    """The text as sent: differs from the input only when transliterated."""
    transliterated: tuple[Transliteration, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    """Earlier mapping entries that could not take the text, in mapping order."""
    single_shift: int | None = None
    """National language single shift table in the UDH (IE 0x24), by language id."""
    locking_shift: int | None = None
    """National language locking shift table in the UDH (IE 0x25), by language id."""

    @property
    def forced_by(self) -> Rejection | None:
        """The character that pushed the text to this encoding (for a preview screen)."""
        return self.rejected[-1] if self.rejected else None


class _Common(TypedDict):
    """The fields of an `EncodedMessage` that do not depend on how it is split."""

    encoding: str
    data_coding: int
    units: int
    sent_text: str
    transliterated: tuple[Transliteration, ...]
    rejected: tuple[Rejection, ...]
    single_shift: int | None
    locking_shift: int | None


# --------------------------------------------------------------------------- splitting


def _split(
    body: bytes, codec: _Codec, capacity: int, boundaries: list[int] | None
) -> tuple[list[bytes], list[int]]:
    """Cut `body` into parts of at most `capacity` code units, at character boundaries.

    Returns the parts and, for each, the index in the original text where it ends.
    """
    parts: list[bytes] = []
    ends: list[int] = []
    n = len(body)
    step = capacity * codec.unit
    start = 0
    if boundaries is not None:  # transliterated: cut only where an original character ends
        # (a replacement is at most a few characters, far below any part's capacity)
        while start < n:
            index = bisect_right(boundaries, start + step) - 1
            end = boundaries[index]
            parts.append(body[start:end])
            ends.append(index + 1)
            start = end
        return parts, ends
    chars = 0
    while start < n:
        end = start + step
        if end >= n:
            end = n
        elif codec.escapes:
            if body[end - 1] == _ESC:  # never part an escape from its character
                end -= 1
        elif codec.unit == 2 and 0xD8 <= body[end - 2] <= 0xDB:  # nor a surrogate pair
            end -= 2
        part = body[start:end]
        parts.append(part)
        if codec.escapes:
            chars += len(part) - part.count(_ESC)
        elif codec.unit == 2:
            chars += len(part.decode("utf-16-be"))
        else:
            chars += len(part)
        ends.append(chars)
        start = end
    return parts, ends


# --------------------------------------------------------------------------- encoding


def encode_message(
    text: str,
    mapping: Sequence[tuple[int, str]] = DEFAULT_MAPPING,
    *,
    transliterate: bool = False,
    message_payload: bool = False,
    max_parts: int = MAX_PARTS,
    reference: int = 0,
    reference_16bit: bool = False,
) -> EncodedMessage:
    """Encode `text` with the first encoding of `mapping` that takes it, and split it.

    `mapping` is the account's ordered (data_coding, encoding name) list. `reference` is the
    concatenation reference of a long message (0..255, or 0..65535 with `reference_16bit`).
    Raises `UnencodableText`, `TooManyParts`, `PayloadTooLong`, or ValueError for a bad
    argument (unknown encoding name, data_coding outside 0..255, max_parts below 1,
    reference out of range).
    """
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, got {max_parts}")
    if not 0 <= reference <= (0xFFFF if reference_16bit else 0xFF):
        bits = 16 if reference_16bit else 8
        raise ValueError(f"reference {reference} does not fit {bits} bits")
    if not mapping:
        raise ValueError("the encoding mapping is empty")

    # Hot path: a short text in the basic GSM alphabet, first entry gsm7.
    data_coding, name = mapping[0]
    if name == "gsm7" and len(text) <= 160 and not message_payload and 0 <= data_coding <= 255:
        basic = _encode_basic(text)
        if basic is not None:
            return EncodedMessage(
                "gsm7", data_coding, False, (basic,), None, 1, len(basic), 160,
                (len(text),), text,
            )  # fmt: skip

    cost = _COST_16 if reference_16bit else _COST_8
    rejected: list[Rejection] = []
    for data_coding, name in mapping:
        codec = _CODECS.get(name)
        if codec is None:
            raise ValueError(
                f"unknown encoding {name!r} in the mapping; "
                f"expected one of {', '.join(ENCODING_NAMES)}"
            )
        if not 0 <= data_coding <= 255:
            raise ValueError(f"data_coding {data_coding} for {name} is outside 0..255")
        encoded = codec.exact(text, cost)
        if isinstance(encoded, int) and transliterate:
            encoded = codec.translit(text, cost)
        if isinstance(encoded, int):
            rejected.append(Rejection(name, encoded, text[encoded]))
            continue
        return _assemble(
            text, codec, data_coding, encoded, tuple(rejected),
            message_payload, max_parts, reference, reference_16bit,
        )  # fmt: skip
    # Name the character that stopped the encoding which got furthest into the text.
    blocking = max(reversed(rejected), key=lambda r: r.index)
    raise UnencodableText(blocking, tuple(rejected))


def _assemble(
    text: str,
    codec: _Codec,
    data_coding: int,
    encoded: _Encoded,
    rejected: tuple[Rejection, ...],
    message_payload: bool,
    max_parts: int,
    reference: int,
    reference_16bit: bool,
) -> EncodedMessage:
    body = encoded.body
    units = len(body) // codec.unit
    ies = _shift_ies(encoded.single_shift, encoded.locking_shift)
    common: _Common = {
        "encoding": codec.name,
        "data_coding": data_coding,
        "units": units,
        "sent_text": encoded.sent_text,
        "transliterated": encoded.transliterated,
        "rejected": rejected,
        "single_shift": encoded.single_shift,
        "locking_shift": encoded.locking_shift,
    }
    single_udh = bytes((len(ies),)) + ies if ies else b""

    if message_payload:
        if codec.packed:
            body = pack_septets(body, fill_bits_after(len(single_udh)))
        payload = single_udh + body
        if len(payload) > PAYLOAD_MAX_OCTETS:
            raise PayloadTooLong(
                f"the text takes {len(payload)} octets in {codec.name}; "
                f"the message_payload TLV holds at most {PAYLOAD_MAX_OCTETS}"
            )
        room = PAYLOAD_MAX_OCTETS - len(single_udh)
        if codec.packed:
            room = (room * 8 - fill_bits_after(len(single_udh))) // 7
        return EncodedMessage(
            udh=bool(single_udh), parts=(), payload=payload, part_count=1,
            part_capacity=room // codec.unit,
            part_ends=(len(text),), **common,
        )  # fmt: skip

    capacity = _capacity(codec.kind, len(single_udh))
    if units <= capacity:
        chunks, ends = [body], [len(text)]
        udhs = [single_udh]
    else:
        concat_octets = 6 if reference_16bit else 5
        capacity = _capacity(codec.kind, 1 + concat_octets + len(ies))
        chunks, ends = _split(body, codec, capacity, encoded.boundaries)
        total = len(chunks)
        allowed = min(max_parts, MAX_PARTS)
        if total > allowed:
            detail = f"{units} {_UNIT_NAMES[codec.kind]}, {capacity} per part"
            raise TooManyParts(total, allowed, codec.name, detail)
        udhl = concat_octets + len(ies)
        if reference_16bit:
            head = bytes((udhl, IEI_CONCAT_16, 4, reference >> 8, reference & 0xFF, total))
        else:
            head = bytes((udhl, IEI_CONCAT_8, 3, reference, total))
        udhs = [head + bytes((seq,)) + ies for seq in range(1, total + 1)]
    if codec.packed:
        parts = tuple(
            udh + pack_septets(chunk, fill_bits_after(len(udh)))
            for udh, chunk in zip(udhs, chunks, strict=True)
        )
    else:
        parts = tuple(udh + chunk for udh, chunk in zip(udhs, chunks, strict=True))
    return EncodedMessage(
        udh=bool(udhs[0]), parts=parts, payload=None, part_count=len(parts),
        part_capacity=capacity, part_ends=tuple(ends), **common,
    )  # fmt: skip
