"""The encodings an account mapping may name, each one able to encode, count and transliterate.

`ENCODING_NAMES` lists them (the settings validate account mappings against `EncodingName`).
Each name has one codec object in `_CODECS`: GSM 03.38 default alphabet + extension table
(`gsm7`, `gsm7_packed`), the national language tables of TS 23.038 (`gsm7_turkish`,
`gsm7_spanish`, `gsm7_portuguese`: the default alphabet with the language's single shift
table, then its locking shift table), IA5 (`ascii`), ISO-8859-1 (`latin1`) and UTF-16BE
(`ucs2`). `exact(text)` encodes the text as it is; `translit(text)` replaces each missing
character by its nearest equivalent (`smsmta.smpp.gsm_tables.EQUIVALENTS`, then Unicode
decomposition). Both return the index of the first character they cannot take instead
of raising. `_capacity` says how many code units one SMS part holds next to a UDH.

The hot path (a short text in the basic GSM alphabet) is `_encode_basic`: one C-level
charmap encode against a prebuilt table.

Touches nothing. Tables: `smsmta.smpp.gsm_tables`.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

from smsmta.smpp import gsm_tables as _tables
from smsmta.smpp.text.base import SM_OCTETS

if TYPE_CHECKING:
    from _codecs import _CharMap

EncodingName = Literal[
    "gsm7",
    "gsm7_packed",
    "ascii",
    "latin1",
    "ucs2",
    "gsm7_turkish",
    "gsm7_spanish",
    "gsm7_portuguese",
]
"""Every encoding name an account mapping may use (the settings layer validates against it)."""

ENCODING_NAMES: tuple[str, ...] = get_args(EncodingName)
"""`EncodingName` as a tuple, in the order above."""

_ESC = _tables.ESCAPE


class Transliteration(NamedTuple):
    # the field shadows tuple.index(): callers read .index and compare with plain tuples
    index: int  # type: ignore[assignment]
    """0-based index of the character in the original text."""
    original: str
    replacement: str
    """What was sent instead; may be longer ("œ" -> "oe") or empty (zero-width space)."""


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


def _basic_encoding_map() -> _CharMap:
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


def _encode_basic(text: str) -> bytes | None:
    """`text` in the basic GSM alphabet, one septet per octet, or None if it is not."""
    try:
        body = _charmap_encode(text, "strict", _BASIC_MAP)[0]
    except UnicodeEncodeError:
        return None
    if "\x00" in text:
        return None
    if 0x80 in body:
        body = body.replace(b"\x80", b"\x00")
    return body


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
            basic = _encode_basic(text)
            if basic is not None:
                return _Encoded(basic, text)
        found: list[_Encoded] = []
        furthest = 0
        for pair in self.pairs:
            try:
                # typeshed wants dict[int, int]; charmap_encode also takes bytes values
                body = _charmap_encode(text, "strict", pair.map)[0]  # type: ignore[arg-type]
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
