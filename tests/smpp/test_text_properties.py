"""smsmta.smpp.text properties, checked by Hypothesis over arbitrary text and octets."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from smsmta.smpp import gsm_tables
from smsmta.smpp.text import (
    DEFAULT_MAPPING,
    DecodedMessage,
    EncodedMessage,
    MalformedUDH,
    Reassembler,
    UnencodableText,
    decode_short_message,
    encode_message,
    fill_bits_after,
    pack_septets,
    parse_udh,
    unpack_septets,
)

# Characters that sit on the interesting edges: the escape, the shift tables, "@" = 0x00,
# surrogate pairs, and those GSM7 lacks. Mixed with anything Unicode has but a lone surrogate.
EDGES = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ ¤!?aAzZ09¡¿§ÄÖÑÜäöñüà"
    "{}[]~^\\|€\f"
    "şğıİŞĞçáíóúÁÍÓÚêôÔãõÃÕâÂÊÀª∞º`"
    "😀🎉中ж\x00\x1b\t\u00a0’“”–…œ"
)
any_char = st.characters(blacklist_categories=("Cs",))
gsm_basic = "".join(c for c in gsm_tables.DEFAULT_ALPHABET if c != gsm_tables.UNDEFINED)
GSM_EXTENSION = "{}[]~^\\|€\f"
NATIONAL = "şğıİŞĞçáíóúÁÍÓÚêôÔãõÃÕâÂÊÀª∞º`"
alphabet = st.one_of(st.sampled_from(EDGES), any_char)
gsmish = st.sampled_from(gsm_basic + GSM_EXTENSION + NATIONAL)
# Short texts and long ones (several parts), of anything or of GSM-like characters.
texts = st.one_of(
    st.text(alphabet=alphabet, max_size=200),
    st.text(alphabet=alphabet, min_size=150, max_size=1500),
    st.text(alphabet=gsmish, min_size=120, max_size=1500),
    st.text(alphabet=st.sampled_from(gsm_basic + GSM_EXTENSION), min_size=120, max_size=1500),
    st.builds(
        lambda t, n: t * n,
        st.text(alphabet=st.one_of(gsmish, alphabet), min_size=1, max_size=9),
        st.integers(10, 200),
    ),
)
gsm_texts = st.text(alphabet=st.sampled_from(gsm_basic + GSM_EXTENSION), max_size=800)

MAPPINGS = [
    DEFAULT_MAPPING,
    ((0, "gsm7_turkish"), (8, "ucs2")),
    ((0, "gsm7_spanish"), (8, "ucs2")),
    ((0, "gsm7_portuguese"), (8, "ucs2")),
    ((1, "ascii"), (3, "latin1"), (8, "ucs2")),
    ((3, "latin1"), (8, "ucs2")),
    ((0, "gsm7"), (3, "latin1"), (8, "ucs2")),
]
SEPTET_ENCODINGS = {"gsm7", "ascii", "gsm7_turkish", "gsm7_spanish", "gsm7_portuguese"}
GSM_ENCODINGS = {"gsm7", "gsm7_packed", "gsm7_turkish", "gsm7_spanish", "gsm7_portuguese"}

references = st.one_of(
    st.tuples(st.just(False), st.integers(0, 0xFF)),
    st.tuples(st.just(True), st.integers(0, 0xFFFF)),
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def udh_length(msg: EncodedMessage, part: bytes) -> int:
    return part[0] + 1 if msg.udh else 0


def reassemble(msg: EncodedMessage, order: list[bytes], packed: bool = False) -> str | None:
    reassembler = Reassembler(timeout=60)
    result = None
    for part in order:
        decoded = decode_short_message(part, msg.data_coding, udhi=msg.udh, packed=packed)
        assert not decoded.replaced and decoded.notes == (), decoded.notes
        concat = decoded.udh.concat if decoded.udh else None
        if concat is None:
            assert msg.part_count == 1
            out = reassembler.add("k", 0, 1, 1, decoded.text, now=0)
        else:
            assert concat.total == msg.part_count
            out = reassembler.add("k", concat.reference, concat.total, concat.seq, decoded.text, 0)
        if out is not None:
            assert result is None, "completed twice"
            result = out
    assert len(reassembler) == 0
    return result


@PROPERTY
@given(text=texts, mapping=st.sampled_from(MAPPINGS), ref=references, seed=st.randoms())
def test_encode_split_decode_reassemble_round_trip(
    text: str, mapping: list[tuple[int, str]], ref: tuple[bool, int], seed: random.Random
) -> None:
    reference_16bit, reference = ref
    msg = encode_message(text, mapping, reference=reference, reference_16bit=reference_16bit)
    assert msg.sent_text == text and msg.transliterated == ()
    event(f"{msg.encoding}, {'one part' if msg.part_count == 1 else 'several parts'}")
    order = list(msg.parts)
    seed.shuffle(order)
    assert reassemble(msg, order) == text


@PROPERTY
@given(
    text=texts,
    mapping=st.sampled_from([*MAPPINGS, ((0, "gsm7_packed"), (8, "ucs2"))]),
    ref=references,
    transliterate=st.booleans(),
)
def test_every_part_fits_one_sms_and_no_character_is_cut(
    text: str, mapping: list[tuple[int, str]], ref: tuple[bool, int], transliterate: bool
) -> None:
    reference_16bit, reference = ref
    msg = encode_message(
        text, mapping, reference=reference, reference_16bit=reference_16bit,
        transliterate=transliterate,
    )  # fmt: skip
    assert len(msg.parts) == msg.part_count <= 255
    assert msg.part_ends[-1] == len(text)
    assert list(msg.part_ends) == sorted(set(msg.part_ends)) or text == ""
    for part in msg.parts:
        udh = udh_length(msg, part)
        body = part[udh:]
        if msg.encoding in SEPTET_ENCODINGS:  # one septet per octet
            assert max(body, default=0) <= 0x7F
            assert len(body) + (udh * 8 + 6) // 7 <= 160
            assert udh + (fill_bits_after(udh) + 7 * len(body) + 7) // 8 <= 140
        else:
            assert len(part) <= 140
        if msg.encoding in GSM_ENCODINGS and msg.encoding != "gsm7_packed":
            assert not body.endswith(b"\x1b")  # an escape's character is never 0x1B
        if msg.encoding == "ucs2":
            assert len(body) % 2 == 0
            assert not 0xD8 <= body[-2] <= 0xDB
    # Each part is the encoding of its slice of the text, on its own.
    if msg.encoding in {"gsm7", "latin1", "ucs2", "ascii"} and not msg.transliterated:
        start = 0
        for part, end in zip(msg.parts, msg.part_ends, strict=True):
            alone = encode_message(text[start:end], [(0, msg.encoding)], message_payload=True)
            assert alone.payload == part[udh_length(msg, part) :]
            start = end


@PROPERTY
@given(text=gsm_texts, ref=references)
def test_packed_parts_are_the_unpacked_parts_packed(text: str, ref: tuple[bool, int]) -> None:
    reference_16bit, reference = ref
    kwargs = {"reference": reference, "reference_16bit": reference_16bit}
    unpacked = encode_message(text, [(0, "gsm7")], **kwargs)  # type: ignore[arg-type]
    packed = encode_message(text, [(0, "gsm7_packed")], **kwargs)  # type: ignore[arg-type]
    assert packed.part_count == unpacked.part_count and packed.part_ends == unpacked.part_ends
    for a, b in zip(unpacked.parts, packed.parts, strict=True):
        udh = udh_length(unpacked, a)
        assert a[:udh] == b[:udh]
        assert unpack_septets(b[udh:], fill_bits_after(udh), count=len(a) - udh) == a[udh:]
    if not any(p.endswith(b"\r") for p in unpacked.parts):  # CR padding is ambiguous
        assert reassemble(packed, list(packed.parts), packed=True) == text


@PROPERTY
@given(septets=st.binary(max_size=300), fill=st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    septets = bytes(b & 0x7F for b in septets)
    packed = pack_septets(septets, fill)
    assert len(packed) == ((fill + 7 * len(septets) + 7) // 8 if septets else 0)
    assert unpack_septets(packed, fill, count=len(septets)) == septets
    # Without a count only a CR that ends exactly on an octet boundary is ambiguous.
    if not (septets.endswith(b"\r") and (fill + 7 * len(septets)) % 8 == 0):
        assert unpack_septets(packed, fill) == septets


@PROPERTY
@given(text=texts)
def test_transliteration_keeps_gsm7_when_every_character_has_an_equivalent(text: str) -> None:
    msg = encode_message(text, DEFAULT_MAPPING, transliterate=True)
    rebuilt = list(text)
    for index, original, replacement in msg.transliterated:
        assert text[index] == original
        rebuilt[index] = replacement
    assert "".join(rebuilt) == msg.sent_text
    if msg.encoding == "gsm7":
        assert reassemble(msg, list(reversed(msg.parts))) == msg.sent_text
    else:
        assert msg.encoding == "ucs2" and msg.sent_text == text
        blocker = msg.forced_by
        assert blocker is not None and text[blocker.index] == blocker.char
        try:
            encode_message(blocker.char, [(0, "gsm7")], transliterate=True)
        except UnencodableText:
            pass
        else:
            raise AssertionError(f"{blocker.char!r} has an equivalent but forced UCS-2")


@PROPERTY
@given(text=texts)
def test_the_hot_path_agrees_with_the_tables(text: str) -> None:
    try:
        msg = encode_message(text, [(0, "gsm7")])
    except UnencodableText as err:
        assert text[err.index] == err.char
        assert err.char not in gsm_basic + GSM_EXTENSION
        assert all(c in gsm_basic + GSM_EXTENSION for c in text[: err.index])
        return
    septets = bytearray()
    for c in text:
        if c in gsm_basic:
            septets.append(gsm_tables.DEFAULT_ALPHABET.index(c))
        else:
            code = next(k for k, v in gsm_tables.DEFAULT_EXTENSION.items() if v == c)
            septets += bytes((0x1B, code))
    assert b"".join(p[udh_length(msg, p) :] for p in msg.parts) == bytes(septets)


@PROPERTY
@given(
    data=st.binary(max_size=300),
    data_coding=st.integers(0, 255),
    udhi=st.booleans(),
    packed=st.booleans(),
)
def test_decoding_never_raises(data: bytes, data_coding: int, udhi: bool, packed: bool) -> None:
    decoded = decode_short_message(data, data_coding, udhi=udhi, packed=packed)
    assert isinstance(decoded, DecodedMessage) and isinstance(decoded.text, str)
    if decoded.replaced:
        assert decoded.notes
    if decoded.udh is None or decoded.udh.concat is None:
        decoded.text.encode("utf-8")  # no lone surrogate left to trip the database


@PROPERTY
@given(data=st.binary(max_size=200))
def test_parse_udh_raises_only_malformed_udh(data: bytes) -> None:
    try:
        udh = parse_udh(data)
    except MalformedUDH:
        return
    assert 1 <= udh.length <= len(data)
    assert sum(2 + len(value) for _, value in udh.elements) == udh.length - 1


@PROPERTY
@given(
    pieces=st.lists(st.text(max_size=20), min_size=2, max_size=12),
    seed=st.randoms(),
    duplicates=st.lists(st.integers(0, 11), max_size=6),
)
def test_reassembler_completes_once_whatever_the_order(
    pieces: list[str], seed: random.Random, duplicates: list[int]
) -> None:
    total = len(pieces)
    arrivals = list(range(1, total + 1)) + [d % total + 1 for d in duplicates]
    seed.shuffle(arrivals)
    reassembler = Reassembler(timeout=5)
    results = [reassembler.add("k", 3, total, seq, pieces[seq - 1], now=0) for seq in arrivals]
    completed = [r for r in results if r is not None]
    assert completed == ["".join(pieces)]
    assert len(reassembler) == 0
