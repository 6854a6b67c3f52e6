"""smsmta.smpp.text receiving side: data_coding groups, UDH parsing, GSM7 decoding, reassembly."""

from __future__ import annotations

import pytest

from smsmta.smpp.text import (
    BadSegment,
    Concat,
    MalformedUDH,
    Reassembler,
    decode_gsm7,
    decode_short_message,
    encode_message,
    pack_septets,
    parse_udh,
)

# --------------------------------------------------------------------------- data_coding


def test_gsm7_unpacked_with_extension_characters() -> None:
    d = decode_short_message(b"\x00 5\x1be \x1b(ok\x1b)", 0, udhi=False)
    assert d.text == "@ 5€ {ok}"
    assert d.encoding == "gsm7" and not d.binary and not d.replaced and d.notes == ()
    assert d.udh is None and d.message_class is None


@pytest.mark.parametrize(
    ("data", "data_coding", "text", "encoding"),
    [
        (b"Hi [x]", 1, "Hi [x]", "ascii"),
        (b"d\xe9j\xe0", 3, "déjà", "latin1"),
        (bytes.fromhex("03a9d83dde00"), 8, "Ω😀", "ucs2"),
        ("Привет".encode("iso8859_5"), 6, "Привет", "iso8859_5"),
        ("שלום".encode("iso8859_8"), 7, "שלום", "iso8859_8"),
        (b"Hello", 0x11, "Hello", "gsm7"),  # general group, class 1
        (bytes.fromhex("0041"), 0x18, "A", "ucs2"),  # general group, UCS2, class 0
        (bytes.fromhex("0041"), 0xE0, "A", "ucs2"),  # MWI store, UCS2
        (b"Hello", 0xC8, "Hello", "gsm7"),  # MWI discard
        (b"Hello", 0xF1, "Hello", "gsm7"),  # class group, GSM7, class 1
        (b"Hello", 0x90, "Hello", "gsm7"),  # reserved group: GSM7 (TS 23.038 4)
    ],
)
def test_alphabets(data: bytes, data_coding: int, text: str, encoding: str) -> None:
    d = decode_short_message(data, data_coding, udhi=False)
    assert (d.text, d.encoding, d.binary, d.replaced) == (text, encoding, False, False)


@pytest.mark.parametrize(
    ("data_coding", "message_class"), [(2, None), (4, None), (0x15, 1), (0xF6, 2), (0x04, None)]
)
def test_eight_bit_data_comes_back_as_hex(data_coding: int, message_class: int | None) -> None:
    d = decode_short_message(b"\x01\xff\x7f", data_coding, udhi=False)
    assert d.binary and d.encoding == "binary"
    assert d.text == "01ff7f" and d.body == b"\x01\xff\x7f"
    assert d.message_class == message_class


def test_message_classes() -> None:
    assert decode_short_message(b"a", 0xF0, udhi=False).message_class == 0
    assert decode_short_message(b"a", 0xF3, udhi=False).message_class == 3
    assert decode_short_message(b"a", 0x10, udhi=False).message_class == 0
    assert decode_short_message(b"a", 0x00, udhi=False).message_class is None


def test_compressed_data_is_not_decompressed_and_says_so() -> None:
    d = decode_short_message(b"\x12\x34", 0x20, udhi=False)
    assert d.binary and d.text == "1234"
    assert "compressed" in d.notes[0]


def test_octets_that_are_not_septets_are_replaced_and_reported() -> None:
    d = decode_short_message(b"ab\x80c\xff", 0, udhi=False)
    assert d.text == "ab\ufffdc\ufffd" and d.replaced
    assert "2 octet(s) above 0x7F" in d.notes[0] and "0x80 at offset 2" in d.notes[0]
    d = decode_short_message(b"a\x1b\x80", 0, udhi=False)
    assert d.text == "a\ufffd" and d.replaced


def test_ascii_and_ucs2_damage_is_replaced_and_reported() -> None:
    d = decode_short_message(b"ok\xe9", 1, udhi=False)
    assert d.text == "ok\ufffd" and d.replaced and d.notes
    d = decode_short_message(b"\x00A\x00", 8, udhi=False)
    assert d.text == "A" and d.replaced and "odd number" in d.notes[0]
    d = decode_short_message(b"\xdc\x00\x00A", 8, udhi=False)  # a lone low surrogate
    assert d.text == "\ufffdA" and d.replaced


def test_escape_rules_of_the_extension_table() -> None:
    assert decode_gsm7(b"\x1bA") == ("A", [])  # undefined in the extension: the base char
    assert decode_gsm7(b"a\x1b\x1bb") == ("a b", [])  # escape escape: a space
    text, notes = decode_gsm7(b"ab\x1b")
    assert text == "ab" and "escape at the end" in notes[0]


def test_unknown_language_tables_fall_back_to_the_default_and_say_so() -> None:
    text, notes = decode_gsm7(b"\x07", locking_shift=13, single_shift=99)
    assert text == "ì" and len(notes) == 2


def test_packed_gsm7_after_a_udh_with_fill_bits() -> None:
    udh = bytes.fromhex("050003070201")
    data = udh + pack_septets(b"hello", 1)
    d = decode_short_message(data, 0, udhi=True, packed=True)
    assert d.text == "hello"
    assert d.udh is not None and d.udh.concat == Concat(7, 2, 1, 8)


def test_turkish_shift_tables_from_the_udh() -> None:
    locking = decode_short_message(bytes.fromhex("03250101") + b"\x07\x1c\x60", 0, udhi=True)
    assert locking.text == "ıŞç"
    single = decode_short_message(bytes.fromhex("03240101") + b"\x1bs\x1bi", 0, udhi=True)
    assert single.text == "şı"
    assert single.udh is not None and single.udh.single_shift == 1


def test_portuguese_and_spanish_tables_from_the_udh() -> None:
    pt = decode_short_message(bytes.fromhex("06250103240103") + b"\x09\x1b\x12\x24", 0, udhi=True)
    assert pt.text == "çΦº"
    es = decode_short_message(bytes.fromhex("03240102") + b"\x1bA\x1ba", 0, udhi=True)
    assert es.text == "Áá"
    # Spanish has no locking shift table: the default alphabet stays, and it is said.
    es_lock = decode_short_message(bytes.fromhex("03250102") + b"\x07", 0, udhi=True)
    assert es_lock.text == "ì" and "locking shift" in es_lock.notes[0]


# --------------------------------------------------------------------------- UDH


def test_parse_udh_reads_every_known_ie_and_keeps_unknown_ones() -> None:
    udh = parse_udh(bytes.fromhex("130804abcd0302050415b300007002ffff240103") + b"!")
    assert udh.length == 20
    assert udh.concat == Concat(0xABCD, 3, 2, 16)
    assert udh.ports == (0x15B3, 0)
    assert udh.single_shift == 3 and udh.locking_shift is None
    assert (0x70, b"\xff\xff") in udh.elements


def test_parse_udh_8bit_ports_and_concat() -> None:
    udh = parse_udh(bytes.fromhex("09000301ff0204021020") + b"text")
    assert udh.concat == Concat(1, 255, 2, 8) and udh.ports == (0x10, 0x20)
    assert udh.length == 10


def test_impossible_concat_values_are_ignored_as_ts_23040_says() -> None:
    udh = parse_udh(bytes.fromhex("0500030a0203"))  # part 3 of 2
    assert udh.concat is None and "ignored" in udh.notes[0]
    udh = parse_udh(bytes.fromhex("0500030a0000"))
    assert udh.concat is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes.fromhex("0500"), "runs past"),
        (bytes.fromhex("0300"), "runs past"),
        (bytes.fromhex("0100"), "cut short"),
        (bytes.fromhex("03000501"), "declares 5 octets"),
        (bytes.fromhex("04000201ff"), "must hold 3 octets"),
        (bytes.fromhex("03240201ff"), "declares 2 octets but only 1 remain"),
        (bytes.fromhex("0424020101"), "must hold 1 octets"),
    ],
)
def test_malformed_udh_raises_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(MalformedUDH, match=message):
        parse_udh(data)


def test_decoding_never_raises_on_a_malformed_udh() -> None:
    d = decode_short_message(bytes.fromhex("04000201ff") + b"Hi", 0, udhi=True)
    assert d.udh is None and d.text == "Hi" and "malformed UDH ignored" in d.notes[0]
    d = decode_short_message(bytes.fromhex("7f") + b"Hi", 0, udhi=True)
    assert d.udh is None and "whole short message" in d.notes[0]
    d = decode_short_message(b"", 8, udhi=True)
    assert d.text == "" and d.notes


# --------------------------------------------------------------------------- reassembly


def parts_of(text: str, **kwargs: object) -> list[tuple[Concat, str]]:
    msg = encode_message(text, **kwargs)  # type: ignore[arg-type]
    out = []
    for part in msg.parts:
        d = decode_short_message(part, msg.data_coding, udhi=msg.udh)
        assert d.udh is not None and d.udh.concat is not None
        out.append((d.udh.concat, d.text))
    return out


def test_reassembly_in_any_order() -> None:
    text = "Bonjour, " * 60
    parts = parts_of(text, reference=77)
    assert len(parts) == 4
    r = Reassembler(timeout=60)
    results = []
    for now, index in enumerate([2, 0, 3, 1]):
        concat, part_text = parts[index]
        assert concat.reference == 77 and concat.total == 4 and concat.seq == index + 1
        results.append(r.add("k", concat.reference, concat.total, concat.seq, part_text, now))
    assert results == [None, None, None, text]
    assert len(r) == 0


def test_duplicates_are_ignored_also_after_completion() -> None:
    r = Reassembler(timeout=10)
    assert r.add("k", 1, 2, 1, "ab", now=0) is None
    assert r.add("k", 1, 2, 1, "XX", now=1) is None
    assert r.add("k", 1, 2, 2, "cd", now=2) == "abcd"
    assert r.add("k", 1, 2, 2, "cd", now=3) is None  # late duplicate: not a new message
    assert len(r) == 0
    assert r.expired(now=20) == []
    # Once forgotten, the same reference may be reused.
    assert r.add("k", 1, 2, 1, "ef", now=21) is None
    assert r.add("k", 1, 2, 2, "gh", now=22) == "efgh"


def test_keys_references_and_totals_keep_messages_apart() -> None:
    r = Reassembler(timeout=10)
    assert r.add("alice", 5, 2, 1, "A1", now=0) is None
    assert r.add("bob", 5, 2, 1, "B1", now=0) is None
    assert r.add("alice", 5, 3, 1, "other", now=0) is None
    assert r.add("bob", 5, 2, 2, "B2", now=0) == "B1B2"
    assert r.add("alice", 5, 2, 2, "A2", now=0) == "A1A2"
    assert len(r) == 1


def test_out_of_range_segments_are_rejected() -> None:
    r = Reassembler(timeout=10)
    for ref, total, seq in [
        (1, 2, 0),
        (1, 2, 3),
        (1, 0, 1),
        (1, 256, 1),
        (-1, 2, 1),
        (65536, 2, 1),
    ]:
        with pytest.raises(BadSegment):
            r.add("k", ref, total, seq, "x", now=0)
    assert len(r) == 0


def test_a_single_part_or_message_payload_comes_straight_back() -> None:
    r = Reassembler(timeout=10)
    assert r.add("k", 0, 1, 1, "whole", now=0) == "whole"
    assert len(r) == 0


def test_incomplete_messages_expire_with_what_arrived() -> None:
    r = Reassembler(timeout=30)
    r.add(("acct", "+33600000000"), 9, 4, 3, "third ", now=100.0)
    r.add(("acct", "+33600000000"), 9, 4, 1, "first ", now=110.0)
    r.add("other", 1, 2, 1, "x", now=125.0)
    assert r.expired(now=129.9) == []
    (partial,) = r.expired(now=130.0)
    assert partial.key == ("acct", "+33600000000") and partial.reference == 9
    assert partial.total == 4 and partial.first_seen == 100.0
    assert partial.parts == ((1, "first "), (3, "third "))
    assert partial.missing == (2, 4)
    assert partial.joined() == "first [...]third [...]"
    assert partial.joined(gap="") == "first third "
    assert len(r) == 1
    assert r.add(("acct", "+33600000000"), 9, 4, 2, "second ", now=131) is None  # starts afresh


def test_a_surrogate_pair_split_by_the_sender_is_joined() -> None:
    # Some phones cut a UTF-16 surrogate pair across two parts.
    one = decode_short_message(
        bytes.fromhex("050003010201") + "ab😀".encode("utf-16-be")[:-2], 8, udhi=True
    )
    two = decode_short_message(
        bytes.fromhex("050003010202") + bytes.fromhex("de00") + b"\x00c", 8, udhi=True
    )
    assert not one.replaced and not two.replaced
    r = Reassembler(timeout=10)
    assert r.add("k", 1, 2, 2, two.text, now=0) is None
    assert r.add("k", 1, 2, 1, one.text, now=0) == "ab😀c"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Reassembler(timeout=0)
