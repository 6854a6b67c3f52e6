"""Decoding an MO or status report short message (SMPP 3.4 5.2.19, TS 23.038 section 4).

`decode_short_message(data, data_coding, udhi=...)` decodes every data_coding group
(general, class and MWI groups), honours the shift-table IEs of the UDH, and never raises
on the octets: what it cannot decode is replaced with U+FFFD and listed in `notes`.
`decode_gsm7` decodes one-septet-per-octet GSM data with given national language tables.

Touches nothing. Tables: `smsmta.smpp.gsm_tables`.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from smsmta.smpp import gsm_tables as _tables
from smsmta.smpp.text.base import MalformedUDH
from smsmta.smpp.text.charsets import _ESC
from smsmta.smpp.text.udh import UserDataHeader, fill_bits_after, parse_udh, unpack_septets


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
        # typeshed wants a dict; charmap_decode also takes a decoding table as a str
        text = codecs.charmap_decode(septets, "replace", basic)[0]  # type: ignore[arg-type]
        if "\ufffd" in text:
            high = [i for i, b in enumerate(septets) if b > 0x7F]
            notes.append(_bad_octets_note(septets, high))
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
