"""SMS text: encoding, splitting into SMS parts, MO decoding and reassembly.

What it does (SPEC section 5):
- `encode_message(text, mapping, ...)` walks the account's encoding mapping in order and
  returns an `EncodedMessage`: the first encoding that takes the whole text wins and sets
  data_coding. Encodings (`ENCODING_NAMES`): GSM 03.38 default alphabet + extension table
  one octet per septet (`gsm7`, what SMPP expects) or packed (`gsm7_packed`); the national
  language shift tables of TS 23.038 (`gsm7_turkish`, `gsm7_spanish`, `gsm7_portuguese`);
  IA5 (`ascii`); ISO-8859-1 (`latin1`); UTF-16BE (`ucs2`). A national encoding tries the
  default alphabet with the language's single shift table, then its locking shift table,
  and keeps the locking one only when it needs fewer parts; each shift IE (0x24/0x25) goes
  in the UDH only when the text uses that table. With transliteration each
  encoding is tried exactly, then with every missing character replaced by its nearest
  equivalent, before the next one; a character without one moves on; when nothing takes
  the text, `UnencodableText` names the character and its 0-based index.
- Long texts are split with a concatenation UDH (IE 0x00, or 0x08 with a 16-bit
  reference) into parts of 153 GSM7 septets / 134 Latin-1 octets / 67 UTF-16 units (less
  when shift-table IEs share the UDH). A part never ends between an escape and its
  character, inside a surrogate pair or inside a transliteration. More than `max_parts`
  (never more than 255) raises `TooManyParts`. In message_payload mode the whole text is
  one part for the message_payload TLV.
- `decode_short_message(data, data_coding, udhi=...)` decodes an MO/SR short message per
  SMPP 3.4 5.2.19 and TS 23.038 section 4 (general, class and MWI groups), honours the
  shift-table IEs, and never raises on the octets: what it cannot decode is replaced and
  listed in `notes`. `parse_udh` raises `MalformedUDH` for a UDH that does not hold together.
- `Reassembler` puts long MOs back together from UDH concat IEs or SAR TLVs, in any
  arrival order, and hands back incomplete ones once their time is up.

Contract: pure functions and one class; no asyncio, sockets, clocks, database or logging.
Time enters `Reassembler` as an argument. Errors are `TextError` (a ValueError).

Why our own: gsm0338 on PyPI is a codec only (no septet packing, no counting, no shift
tables, no splitting); smpplib splits an escape from its character and knows only the
default table. The hot path (a short text in the basic GSM alphabet) is one C-level
charmap encode against a prebuilt table.

Touches nothing. Tables: `smsmta.smpp.gsm_tables`.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from smsmta.smpp import gsm_tables as _tables

__all__ = [
    "DEFAULT_MAPPING",
    "ENCODING_NAMES",
    "MAX_PARTS",
    "BadSegment",
    "Concat",
    "DecodedMessage",
    "EncodedMessage",
    "MalformedUDH",
    "PartialMessage",
    "PayloadTooLong",
    "Reassembler",
    "Rejection",
    "TextError",
    "TooManyParts",
    "Transliteration",
    "UnencodableText",
    "UserDataHeader",
    "build_udh",
    "decode_gsm7",
    "decode_short_message",
    "encode_message",
    "fill_bits_after",
    "pack_septets",
    "parse_udh",
    "unpack_septets",
]

ENCODING_NAMES: tuple[str, ...] = (
    "gsm7",
    "gsm7_packed",
    "ascii",
    "latin1",
    "ucs2",
    "gsm7_turkish",
    "gsm7_spanish",
    "gsm7_portuguese",
)
"""Every encoding name an account mapping may use (the settings layer validates against it)."""

DEFAULT_MAPPING: tuple[tuple[int, str], ...] = ((0, "gsm7"), (8, "ucs2"))
"""(data_coding, encoding name) in the order they are tried: GSM7 -> 0, then UCS-2 -> 8."""

MAX_PARTS = 255
"""Protocol ceiling: the concatenation IE counts parts in one octet."""

SM_OCTETS = 140
"""User data of one SMS: 140 octets = 160 septets."""

PAYLOAD_MAX_OCTETS = 0xFFFF
"""The message_payload TLV length field is 16 bits."""

IEI_CONCAT_8 = 0x00
IEI_PORTS_8 = 0x04
IEI_PORTS_16 = 0x05
IEI_CONCAT_16 = 0x08
IEI_SINGLE_SHIFT = 0x24
IEI_LOCKING_SHIFT = 0x25

_ESC = _tables.ESCAPE


# --------------------------------------------------------------------------- errors


class TextError(ValueError):
    """Base class of this module's errors."""


class UnencodableText(TextError):
    """No encoding of the mapping takes the text; names the blocking character."""

    def __init__(self, blocking: Rejection, rejected: tuple[Rejection, ...]) -> None:
        self.char = blocking.char
        self.index = blocking.index
        self.rejected = rejected
        message = (
            f"cannot encode the text: {_describe(self.char)} at index {self.index} (0-based) "
            f"is not in {blocking.encoding}"
        )
        others = [r for r in rejected if r is not blocking]
        if others:
            tried = "; ".join(
                f"{r.encoding} stopped at {_describe(r.char)}, index {r.index}" for r in others
            )
            message += f" ({tried})"
        super().__init__(message)


class TooManyParts(TextError):
    """The text needs more SMS parts than the delivery allows."""

    def __init__(self, needed: int, allowed: int, encoding: str, detail: str) -> None:
        self.needed = needed
        self.allowed = allowed
        self.encoding = encoding
        super().__init__(
            f"the text needs {needed} SMS parts in {encoding} ({detail}) "
            f"but at most {allowed} are allowed"
            + (" (255 is the protocol ceiling)" if allowed == MAX_PARTS else "")
        )


class PayloadTooLong(TextError):
    """The encoded text does not fit the 16-bit message_payload TLV length."""


class MalformedUDH(TextError):
    """A user data header whose lengths do not hold together, or a known IE of the wrong size."""


class BadSegment(TextError):
    """A concatenation segment with an impossible reference, total or sequence number."""


def _describe(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X})" if len(char) == 1 else repr(char)


# --------------------------------------------------------------------------- results


class Transliteration(NamedTuple):
    index: int
    """0-based index of the character in the original text."""
    original: str
    replacement: str
    """What was sent instead; may be longer ("œ" -> "oe") or empty (zero-width space)."""


class Rejection(NamedTuple):
    encoding: str
    """The mapping entry that could not take the text."""
    index: int
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


# --------------------------------------------------------------------------- septets


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack one-septet-per-octet data into GSM 7-bit packed octets.

    `fill_bits` zero bits come first (after a UDH, so the first septet starts on a septet
    boundary of the user data: see `fill_bits_after`). When the last octet would end with
    7 spare bits, they carry a CR (TS 23.038 6.1.2.3.1) so they are not read as "@".
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    n = len(septets)
    if n == 0:
        return b""
    if max(septets) > 0x7F:
        raise ValueError("a septet above 0x7F cannot be packed")
    value = 0
    for s in reversed(septets):
        value = (value << 7) | s
    bits = fill_bits + 7 * n
    value <<= fill_bits
    octets = (bits + 7) // 8
    if octets * 8 - bits == 7:
        value |= 0x0D << bits
    return value.to_bytes(octets, "little")


def unpack_septets(data: bytes, fill_bits: int = 0, count: int | None = None) -> bytes:
    """Unpack GSM 7-bit packed octets to one septet per octet.

    `count` is the number of septets when known; without it every whole septet is
    returned, except a CR in the last 7 bits, which TS 23.038 6.1.2.3.1 makes padding.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    bits = len(data) * 8 - fill_bits
    available = max(bits, 0) // 7
    n = available if count is None else min(count, available)
    value = int.from_bytes(data, "little") >> fill_bits
    out = bytearray(n)
    for i in range(n):
        out[i] = value & 0x7F
        value >>= 7
    if count is None and n and bits % 7 == 0 and out[-1] == 0x0D:
        del out[-1]
    return bytes(out)


def fill_bits_after(udh_octets: int) -> int:
    """Fill bits between a UDH of `udh_octets` octets (UDHL included) and the first septet."""
    return (7 - (udh_octets * 8) % 7) % 7


# --------------------------------------------------------------------------- GSM tables


class _GsmTables:
    """One (locking shift, single shift) table pair, compiled for encoding."""

    __slots__ = ("locking", "lookup", "map", "single", "single_ie_chars")

    def __init__(self, locking: int | None, single: int | None) -> None:
        self.locking = locking
        self.single = single
        basic = _tables.LOCKING_SHIFT_TABLES[locking] if locking else _tables.DEFAULT_ALPHABET
        ext = _tables.SINGLE_SHIFT_TABLES[single] if single else _tables.DEFAULT_EXTENSION
        lookup: dict[str, bytes] = {}
        for code, ch in enumerate(basic):
            if ch != _tables.UNDEFINED:
                lookup[ch] = bytes((code,))
        needs_ie = set()
        for code, ch in ext.items():
            if ch not in lookup:
                lookup[ch] = bytes((_ESC, code))
                if _tables.DEFAULT_EXTENSION.get(code) != ch:
                    needs_ie.add(ch)
        self.lookup = lookup
        self.map = {ord(ch): (b[0] if len(b) == 1 else b) for ch, b in lookup.items()}
        # Characters that only this single shift table reaches: without them the receiver's
        # default extension table does the same job and the IE is not needed.
        self.single_ie_chars = frozenset(needs_ie)


def _basic_encoding_map() -> object:
    # charmap_build makes a C EncodingMap only when position 0 is U+0000, so "@" (septet
    # 0x00) is mapped to octet 0x80 and moved back after the encode.
    table = ["\ufffe"] * 256
    for code, ch in enumerate(_tables.DEFAULT_ALPHABET):
        if ch != _tables.UNDEFINED and code:
            table[code] = ch
    table[0] = "\x00"
    table[0x80] = "@"
    return codecs.charmap_build("".join(table))


_BASIC_MAP = _basic_encoding_map()
_DEFAULT_TABLES = _GsmTables(None, None)
_charmap_encode = codecs.charmap_encode


# --------------------------------------------------------------------------- transliteration


def _equivalent(ch: str, lookup: dict[str, bytes]) -> str | None:
    """Nearest equivalent of `ch` made only of characters in `lookup`, or None."""
    for candidate in _tables.EQUIVALENTS.get(ch, ()):
        if all(c in lookup for c in candidate):
            return candidate
    if unicodedata.combining(ch):
        return ""  # a combining mark left alone: the base character already went out
    decomposed = "".join(
        c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)
    )
    if not decomposed or decomposed == ch:
        return None
    out = []
    for c in decomposed:
        if c in lookup:
            out.append(c)
            continue
        for candidate in _tables.EQUIVALENTS.get(c, ()):
            if all(x in lookup for x in candidate):
                out.append(candidate)
                break
        else:
            return None
    return "".join(out)


_CACHE_LIMIT = 4096  # equivalents remembered per encoding


class _Encoded(NamedTuple):
    body: bytes
    sent_text: str
    boundaries: list[int] | None = None
    """Octet offset where each original character ends (only when transliterated)."""
    transliterated: tuple[Transliteration, ...] = ()
    single_shift: int | None = None
    locking_shift: int | None = None


def _transliterate(
    text: str, lookup: dict[str, bytes], cache: dict[str, str | None]
) -> tuple[bytes, str, list[int], tuple[Transliteration, ...]] | int:
    pieces: list[bytes] = []
    sent: list[str] = []
    boundaries: list[int] = []
    subs: list[Transliteration] = []
    offset = 0
    get = lookup.get
    for i, ch in enumerate(text):
        b = get(ch)
        if b is None:
            if ch in cache:
                rep = cache[ch]
            else:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                rep = cache[ch] = _equivalent(ch, lookup)
            if rep is None:
                return i
            b = b"".join([lookup[c] for c in rep])
            subs.append(Transliteration(i, ch, rep))
            sent.append(rep)
        else:
            sent.append(ch)
        pieces.append(b)
        offset += len(b)
        boundaries.append(offset)
    return b"".join(pieces), "".join(sent), boundaries, tuple(subs)


# --------------------------------------------------------------------------- codecs

_SEPTETS = 0
_OCTETS = 1
_UTF16 = 2

_UNIT_NAMES = {_SEPTETS: "septets", _OCTETS: "octets", _UTF16: "UTF-16 units"}


class _Codec:
    """One encoding name: how to encode, count and split."""

    name: str
    kind: int = _SEPTETS
    unit: int = 1  # octets per code unit in the body
    escapes: bool = False  # 0x1B in the body is a GSM escape prefix
    packed: bool = False

    def exact(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        raise NotImplementedError

    def translit(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        raise NotImplementedError


class _IeCost(NamedTuple):
    """What the caller's layout makes a shift-table IE cost: used to pick table pairs."""

    concat_octets: int


def _capacity(kind: int, udh_octets: int) -> int:
    """Code units one SMS holds next to a UDH of `udh_octets` octets (0: no UDH)."""
    if kind == _SEPTETS:
        return 160 - (udh_octets * 8 + 6) // 7
    if kind == _OCTETS:
        return SM_OCTETS - udh_octets
    return (SM_OCTETS - udh_octets) // 2


def _ie_octets(single: int | None, locking: int | None) -> int:
    return (3 if single is not None else 0) + (3 if locking is not None else 0)


def _estimate_parts(units: int, ies: int, cost: _IeCost) -> int:
    single = _capacity(_SEPTETS, 1 + ies if ies else 0)
    if units <= single:
        return 1
    per_part = _capacity(_SEPTETS, 1 + cost.concat_octets + ies)
    return -(-units // per_part)


class _Gsm(_Codec):
    escapes = True

    def __init__(self, name: str, pairs: Sequence[_GsmTables], packed: bool = False) -> None:
        self.name = name
        self.pairs = tuple(pairs)
        self.packed = packed
        self.caches: tuple[dict[str, str | None], ...] = tuple({} for _ in self.pairs)

    def _shifts(self, pair: _GsmTables, sent: str) -> tuple[int | None, int | None]:
        single = pair.single if not pair.single_ie_chars.isdisjoint(sent) else None
        return single, pair.locking

    def _best(self, found: list[_Encoded], cost: _IeCost) -> _Encoded:
        if len(found) == 1:
            return found[0]
        # fewest parts, then the earlier table pair (default alphabet + single shift first)
        return min(
            found,
            key=lambda e: _estimate_parts(
                len(e.body), _ie_octets(e.single_shift, e.locking_shift), cost
            ),
        )

    def exact(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        if self.pairs[0] is _DEFAULT_TABLES:
            try:
                body = _charmap_encode(text, "strict", _BASIC_MAP)[0]
            except UnicodeEncodeError:
                pass
            else:
                if "\x00" not in text:
                    if 0x80 in body:
                        body = body.replace(b"\x80", b"\x00")
                    return _Encoded(body, text)
        found: list[_Encoded] = []
        furthest = 0
        for pair in self.pairs:
            try:
                body = _charmap_encode(text, "strict", pair.map)[0]
            except UnicodeEncodeError as exc:
                furthest = max(furthest, exc.start)
                continue
            single, locking = self._shifts(pair, text)
            found.append(_Encoded(body, text, None, (), single, locking))
        return self._best(found, ies_cost) if found else furthest

    def translit(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        found: list[_Encoded] = []
        furthest = 0
        for pair, cache in zip(self.pairs, self.caches, strict=True):
            result = _transliterate(text, pair.lookup, cache)
            if isinstance(result, int):
                furthest = max(furthest, result)
                continue
            body, sent, boundaries, subs = result
            single, locking = self._shifts(pair, sent)
            found.append(_Encoded(body, sent, boundaries, subs, single, locking))
        return self._best(found, ies_cost) if found else furthest


class _Octets(_Codec):
    kind = _OCTETS

    def __init__(self, name: str, python_codec: str, size: int, kind: int) -> None:
        self.name = name
        self.python_codec = python_codec
        self.kind = kind
        self.lookup = {chr(i): bytes((i,)) for i in range(size)}
        self.cache: dict[str, str | None] = {}

    def exact(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        try:
            return _Encoded(text.encode(self.python_codec), text)
        except UnicodeEncodeError as exc:
            return exc.start

    def translit(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        result = _transliterate(text, self.lookup, self.cache)
        if isinstance(result, int):
            return result
        body, sent, boundaries, subs = result
        return _Encoded(body, sent, boundaries, subs)


class _Ucs2(_Codec):
    kind = _UTF16
    unit = 2
    name = "ucs2"

    def exact(self, text: str, ies_cost: _IeCost) -> _Encoded | int:
        try:
            return _Encoded(text.encode("utf-16-be"), text)
        except UnicodeEncodeError as exc:  # a lone surrogate
            return exc.start

    translit = exact  # every character is in UTF-16 but a lone surrogate, which has no equivalent


def _language_codec(name: str, language: int) -> _Gsm:
    pairs = [_GsmTables(None, language)]
    if language in _tables.LOCKING_SHIFT_TABLES:
        pairs.append(_GsmTables(language, language))
    return _Gsm(name, pairs)


_CODECS: dict[str, _Codec] = {
    "gsm7": _Gsm("gsm7", [_DEFAULT_TABLES]),
    "gsm7_packed": _Gsm("gsm7_packed", [_DEFAULT_TABLES], packed=True),
    "ascii": _Octets("ascii", "ascii", 0x80, _SEPTETS),
    "latin1": _Octets("latin1", "latin-1", 0x100, _OCTETS),
    "ucs2": _Ucs2(),
    "gsm7_turkish": _language_codec("gsm7_turkish", _tables.TURKISH),
    "gsm7_spanish": _language_codec("gsm7_spanish", _tables.SPANISH),
    "gsm7_portuguese": _language_codec("gsm7_portuguese", _tables.PORTUGUESE),
}
assert tuple(_CODECS) == ENCODING_NAMES

_COST_8 = _IeCost(5)
_COST_16 = _IeCost(6)


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


def _shift_ies(single: int | None, locking: int | None) -> bytes:
    ies = b""
    if single is not None:
        ies += bytes((IEI_SINGLE_SHIFT, 1, single))
    if locking is not None:
        ies += bytes((IEI_LOCKING_SHIFT, 1, locking))
    return ies


def build_udh(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A UDH (UDHL included) from (IEI, value) pairs, in the given order."""
    body = b"".join(bytes((iei, len(value))) + value for iei, value in elements)
    if len(body) > SM_OCTETS - 1:
        raise ValueError(f"a UDH of {len(body) + 1} octets does not fit an SMS")
    return bytes((len(body),)) + body


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
        try:
            body = _charmap_encode(text, "strict", _BASIC_MAP)[0]
        except UnicodeEncodeError:
            pass
        else:
            if "\x00" not in text:
                if 0x80 in body:
                    body = body.replace(b"\x80", b"\x00")
                return EncodedMessage(
                    "gsm7", data_coding, False, (body,), None, 1, len(body), 160,
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
    common = {
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


# --------------------------------------------------------------------------- UDH parsing


@dataclass(frozen=True, slots=True)
class Concat:
    """A concatenation IE: this is part `seq` of `total` of message `reference`."""

    reference: int
    total: int
    seq: int
    reference_bits: int = 8


@dataclass(frozen=True, slots=True)
class UserDataHeader:
    length: int
    """Octets the UDH takes at the start of the short message, UDHL included."""
    elements: tuple[tuple[int, bytes], ...]
    """Every IE as (IEI, value), unknown ones included, in order."""
    concat: Concat | None = None
    single_shift: int | None = None
    locking_shift: int | None = None
    ports: tuple[int, int] | None = None
    """(destination port, originator port) of an application port IE (0x04 or 0x05)."""
    notes: tuple[str, ...] = ()
    """IEs ignored as TS 23.040 asks (a concatenation IE with sequence 0, for instance)."""


_KNOWN_IE_SIZES = {
    IEI_CONCAT_8: (3, "concatenation, 8-bit reference"),
    IEI_PORTS_8: (2, "application ports, 8-bit"),
    IEI_PORTS_16: (4, "application ports, 16-bit"),
    IEI_CONCAT_16: (4, "concatenation, 16-bit reference"),
    IEI_SINGLE_SHIFT: (1, "national language single shift"),
    IEI_LOCKING_SHIFT: (1, "national language locking shift"),
}


def parse_udh(data: bytes) -> UserDataHeader:
    """Parse the UDH at the start of a short message (UDHI set). Raises `MalformedUDH`."""
    if not data:
        raise MalformedUDH("UDHI is set but the short message is empty")
    udhl = data[0]
    end = 1 + udhl
    if end > len(data):
        raise MalformedUDH(
            f"UDH length {udhl} runs past the end of the {len(data)}-octet short message"
        )
    elements: list[tuple[int, bytes]] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise MalformedUDH(f"information element at UDH offset {pos} is cut short")
        iei, size = data[pos], data[pos + 1]
        if pos + 2 + size > end:
            raise MalformedUDH(
                f"information element 0x{iei:02X} at UDH offset {pos} declares {size} octets "
                f"but only {end - pos - 2} remain in the UDH"
            )
        elements.append((iei, bytes(data[pos + 2 : pos + 2 + size])))
        pos += 2 + size

    concat = None
    single = locking = None
    ports = None
    notes: list[str] = []
    for iei, value in elements:  # a repeated IE: the last one counts (TS 23.040 9.2.3.24)
        known = _KNOWN_IE_SIZES.get(iei)
        if known is None:
            continue
        if len(value) != known[0]:
            raise MalformedUDH(
                f"information element 0x{iei:02X} ({known[1]}) must hold {known[0]} octets, "
                f"got {len(value)}"
            )
        if iei in (IEI_CONCAT_8, IEI_CONCAT_16):
            if iei == IEI_CONCAT_8:
                ref, total, seq, bits = value[0], value[1], value[2], 8
            else:
                ref, total, seq, bits = (value[0] << 8) | value[1], value[2], value[3], 16
            if total == 0 or seq == 0 or seq > total:
                notes.append(
                    f"concatenation IE ignored: part {seq} of {total} is impossible (TS 23.040)"
                )
                continue
            concat = Concat(ref, total, seq, bits)
        elif iei == IEI_SINGLE_SHIFT:
            single = value[0]
        elif iei == IEI_LOCKING_SHIFT:
            locking = value[0]
        elif iei == IEI_PORTS_8:
            ports = (value[0], value[1])
        else:
            ports = ((value[0] << 8) | value[1], (value[2] << 8) | value[3])
    return UserDataHeader(end, tuple(elements), concat, single, locking, ports, tuple(notes))


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """A decoded deliver_sm short message (or message_payload)."""

    udh: UserDataHeader | None
    text: str
    """The text; for binary data (`binary` true) the octets in lower-case hex."""
    encoding: str
    """gsm7, ascii, latin1, ucs2, binary, or the Python codec of another SMPP alphabet."""
    message_class: int | None
    binary: bool
    body: bytes
    """The user data after the UDH, as received."""
    replaced: bool
    """Some octets could not be decoded and were replaced with U+FFFD."""
    notes: tuple[str, ...] = ()
    """What was replaced, ignored or guessed, in words."""


# SMPP 3.4 5.2.19 data_coding 0x00..0x0F (values it leaves reserved are GSM7, TS 23.038 4)
_SMPP_ALPHABETS = {
    0: "gsm7",
    1: "ascii",
    2: "binary",
    3: "latin1",
    4: "binary",
    5: "binary",  # JIS X 0208: not decoded
    6: "iso8859_5",
    7: "iso8859_8",
    8: "ucs2",
    9: "binary",  # pictogram
    10: "iso2022_jp",
    11: "gsm7",
    12: "gsm7",
    13: "binary",  # extended kanji JIS X 0212: not decoded
    14: "euc_kr",  # KS C 5601
    15: "gsm7",
}
_GENERAL_ALPHABETS = ("gsm7", "binary", "ucs2", "gsm7")  # bits 3..2; 11 is reserved


def _classify(data_coding: int) -> tuple[str, int | None, bool]:
    """(alphabet, message class, compressed) of a data_coding value."""
    if data_coding < 0x10:
        return _SMPP_ALPHABETS[data_coding], None, False
    if data_coding < 0x80:  # general data coding, and the automatic-deletion group
        bits = data_coding & 0x3F
        cls = bits & 0x03 if bits & 0x10 else None
        return _GENERAL_ALPHABETS[(bits >> 2) & 0x03], cls, bool(bits & 0x20)
    if data_coding < 0xC0:  # reserved coding groups
        return "gsm7", None, False
    if data_coding < 0xE0:  # message waiting indication, discard / store
        return "gsm7", None, False
    if data_coding < 0xF0:  # message waiting indication, store, UCS2
        return "ucs2", None, False
    return ("binary" if data_coding & 0x04 else "gsm7"), data_coding & 0x03, False


def _decode_table(locking: int | None) -> str:
    table = _tables.LOCKING_SHIFT_TABLES[locking] if locking else _tables.DEFAULT_ALPHABET
    return table.replace(_tables.UNDEFINED, "\ufffe")


_DECODE_TABLES = {lang: _decode_table(lang) for lang in (None, *_tables.LOCKING_SHIFT_TABLES)}


def decode_gsm7(
    septets: bytes, *, locking_shift: int | None = None, single_shift: int | None = None
) -> tuple[str, list[str]]:
    """Decode one-septet-per-octet GSM 7-bit data with the given national language tables.

    Returns the text and notes on anything replaced. An escape followed by a septet the
    single shift table lacks shows the locking table's character (TS 23.038 6.2.1.1); an
    escape followed by an escape shows a space; an octet above 0x7F becomes U+FFFD.
    """
    notes: list[str] = []
    if locking_shift is not None and locking_shift not in _tables.LOCKING_SHIFT_TABLES:
        notes.append(f"no locking shift table for language {locking_shift}: default alphabet used")
        locking_shift = None
    if single_shift is not None and single_shift not in _tables.SINGLE_SHIFT_TABLES:
        notes.append(f"no single shift table for language {single_shift}: default extension used")
        single_shift = None
    basic = _DECODE_TABLES[locking_shift]
    if _ESC not in septets:
        text = codecs.charmap_decode(septets, "replace", basic)[0]
        if "\ufffd" in text:
            bad = [i for i, b in enumerate(septets) if b > 0x7F]
            notes.append(_bad_octets_note(septets, bad))
        return text, notes
    ext = _tables.SINGLE_SHIFT_TABLES[single_shift] if single_shift else _tables.DEFAULT_EXTENSION
    out: list[str] = []
    bad: list[int] = []
    i, n = 0, len(septets)
    while i < n:
        b = septets[i]
        if b == _ESC:
            if i + 1 == n:
                notes.append(f"escape at the end of the data (offset {i}) dropped")
                break
            nb = septets[i + 1]
            if nb == _ESC:
                out.append(" ")  # reserved for a further extension table: shown as a space
            elif nb > 0x7F:
                out.append("\ufffd")
                bad.append(i + 1)
            else:
                out.append(ext.get(nb) or basic[nb])
            i += 2
            continue
        if b > 0x7F:
            out.append("\ufffd")
            bad.append(i)
        else:
            out.append(basic[b])
        i += 1
    if bad:
        notes.append(_bad_octets_note(septets, bad))
    return "".join(out), notes


def _bad_octets_note(data: bytes, bad: list[int]) -> str:
    return (
        f"{len(bad)} octet(s) above 0x7F are not GSM septets and were replaced with U+FFFD "
        f"(first 0x{data[bad[0]]:02X} at offset {bad[0]})"
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _fix_surrogates(text: str, keep_edges: bool = False) -> tuple[str, int]:
    """Join surrogate pairs split across strings; replace lone halves with U+FFFD.

    With `keep_edges`, a high half at the very end and a low half at the very start are
    kept: they belong to the neighbouring parts of a concatenated message.
    """
    if not _SURROGATE.search(text):
        return text, 0
    joined = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")
    head = tail = ""
    if keep_edges:
        if joined and "\udc00" <= joined[0] <= "\udfff":
            head, joined = joined[0], joined[1:]
        if joined and "\ud800" <= joined[-1] <= "\udbff":
            joined, tail = joined[:-1], joined[-1]
    lone = len(_SURROGATE.findall(joined))
    if lone:
        joined = _SURROGATE.sub("\ufffd", joined)
    return head + joined + tail, lone


def decode_short_message(
    data: bytes, data_coding: int, *, udhi: bool, packed: bool = False
) -> DecodedMessage:
    """Decode a deliver_sm short_message (or message_payload). Never raises on `data`.

    `udhi` is esm_class bit 0x40. GSM7 is one septet per octet as SMPP sends it, unless
    `packed` (for SMSCs that send packed septets). A malformed UDH is reported in `notes`
    and skipped when its length byte allows, else the whole data is decoded as text.
    """
    if not 0 <= data_coding <= 255:
        raise ValueError(f"data_coding {data_coding} is outside 0..255")
    notes: list[str] = []
    udh: UserDataHeader | None = None
    body = data
    if udhi:
        try:
            udh = parse_udh(data)
        except MalformedUDH as exc:
            if data and data[0] + 1 <= len(data):
                body = data[data[0] + 1 :]
                notes.append(f"malformed UDH ignored: {exc}")
            else:
                notes.append(f"malformed UDH, whole short message decoded as text: {exc}")
        else:
            body = data[udh.length :]
            notes.extend(udh.notes)
    udh_octets = len(data) - len(body)

    alphabet, message_class, compressed = _classify(data_coding)
    if compressed:
        notes.append(
            f"data_coding 0x{data_coding:02X} says compressed (TS 23.042): not decompressed"
        )
        alphabet = "binary"
    replaced = False
    if alphabet == "gsm7":
        septets = (
            unpack_septets(body, fill_bits_after(udh_octets) if udh_octets else 0)
            if packed
            else body
        )
        text, gsm_notes = decode_gsm7(
            septets,
            locking_shift=udh.locking_shift if udh else None,
            single_shift=udh.single_shift if udh else None,
        )
        replaced = "\ufffd" in text
        notes.extend(gsm_notes)
    elif alphabet == "binary":
        return DecodedMessage(
            udh, body.hex(), "binary", message_class, True, body, False, tuple(notes)
        )
    elif alphabet == "ucs2":
        raw = body
        if len(raw) % 2:
            notes.append(f"odd number of octets ({len(raw)}) for UCS-2: last octet dropped")
            raw = raw[:-1]
            replaced = True
        text = raw.decode("utf-16-be", "surrogatepass")
        text, lone = _fix_surrogates(text, keep_edges=udh is not None and udh.concat is not None)
        if lone:
            notes.append(f"{lone} lone UTF-16 surrogate(s) replaced with U+FFFD")
            replaced = True
    else:
        python_codec = "latin-1" if alphabet == "latin1" else alphabet
        text = body.decode(python_codec, "replace")
        if "\ufffd" in text:
            notes.append(f"octets not valid in {alphabet} were replaced with U+FFFD")
            replaced = True
    return DecodedMessage(udh, text, alphabet, message_class, False, body, replaced, tuple(notes))


# --------------------------------------------------------------------------- reassembly


@dataclass(frozen=True, slots=True)
class PartialMessage:
    """A long MO whose parts did not all arrive in time."""

    key: Hashable
    reference: int
    total: int
    parts: tuple[tuple[int, str], ...]
    """(sequence number, text) of the parts received, in order."""
    first_seen: float

    @property
    def missing(self) -> tuple[int, ...]:
        have = {seq for seq, _ in self.parts}
        return tuple(seq for seq in range(1, self.total + 1) if seq not in have)

    def joined(self, gap: str = "[...]") -> str:
        """The received text in order, with `gap` where parts are missing."""
        texts = dict(self.parts)
        pieces: list[str] = []
        for seq in range(1, self.total + 1):
            piece = texts.get(seq)
            if piece is None:
                if not pieces or pieces[-1] is not gap:
                    pieces.append(gap)
            else:
                pieces.append(piece)
        return _fix_surrogates("".join(pieces))[0]


class Reassembler:
    """Puts long MOs back together, whatever the order their parts arrive in.

    A message is identified by the caller's `key` (say account, source and destination
    address), its reference and its total; parts come from a UDH concat IE or from the SAR
    TLVs. `add` returns the whole text when the last part arrives, else None. Duplicates are
    ignored (also for `timeout` after completion). Call `expired(now)` regularly: it hands
    back, and forgets, messages still incomplete `timeout` seconds after their first part.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._pending: dict[tuple[Hashable, int, int], tuple[float, dict[int, str]]] = {}
        self._done: dict[tuple[Hashable, int, int], float] = {}

    def __len__(self) -> int:
        """Messages waiting for parts."""
        return len(self._pending)

    def add(
        self, key: Hashable, ref: int, total: int, seq: int, text: str, now: float
    ) -> str | None:
        if not 1 <= total <= MAX_PARTS:
            raise BadSegment(f"total {total} is outside 1..{MAX_PARTS}")
        if not 1 <= seq <= total:
            raise BadSegment(f"part {seq} of {total} is out of range")
        if not 0 <= ref <= 0xFFFF:
            raise BadSegment(f"reference {ref} is outside 0..65535")
        if total == 1:
            return _fix_surrogates(text)[0]
        ident = (key, ref, total)
        if ident in self._done:
            return None  # a late duplicate of a message already handed back
        entry = self._pending.get(ident)
        if entry is None:
            entry = self._pending[ident] = (now, {})
        parts = entry[1]
        if seq in parts:
            return None
        parts[seq] = text
        if len(parts) < total:
            return None
        del self._pending[ident]
        self._done[ident] = now
        return _fix_surrogates("".join(parts[i] for i in range(1, total + 1)))[0]

    def expired(self, now: float) -> list[PartialMessage]:
        """Incomplete messages whose first part is `timeout` or more old, now forgotten."""
        deadline = now - self.timeout
        for ident in [i for i, done_at in self._done.items() if done_at <= deadline]:
            del self._done[ident]
        out: list[PartialMessage] = []
        for ident in [i for i, (first, _) in self._pending.items() if first <= deadline]:
            first, parts = self._pending.pop(ident)
            key, ref, total = ident
            received = tuple((seq, _fix_surrogates(parts[seq])[0]) for seq in sorted(parts))
            out.append(PartialMessage(key, ref, total, received, first))
        return out
