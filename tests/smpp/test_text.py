"""smsmta.smpp.text encoding side: tables, encoding choice, capacities, splitting, golden bytes."""

from __future__ import annotations

import pytest

from smsmta.smpp import gsm_tables
from smsmta.smpp.text import (
    DEFAULT_MAPPING,
    ENCODING_NAMES,
    PayloadTooLong,
    Rejection,
    TooManyParts,
    UnencodableText,
    build_udh,
    decode_short_message,
    encode_message,
    fill_bits_after,
    pack_septets,
    unpack_septets,
)

GSM = [(0, "gsm7")]
LATIN1 = [(3, "latin1")]
UCS2 = [(8, "ucs2")]
ASCII = [(1, "ascii")]


def concat8(ref: int, total: int, seq: int) -> bytes:
    return bytes((5, 0, 3, ref, total, seq))


# --------------------------------------------------------------------------- contract


def test_encoding_names_are_exactly_the_settings_list() -> None:
    assert ENCODING_NAMES == (
        "gsm7",
        "gsm7_packed",
        "ascii",
        "latin1",
        "ucs2",
        "gsm7_turkish",
        "gsm7_spanish",
        "gsm7_portuguese",
    )
    assert DEFAULT_MAPPING == ((0, "gsm7"), (8, "ucs2"))


@pytest.mark.parametrize(
    "table",
    [gsm_tables.DEFAULT_ALPHABET, gsm_tables.TURKISH_LOCKING, gsm_tables.PORTUGUESE_LOCKING],
)
def test_locking_tables_have_128_distinct_entries_and_escape_at_1b(table: str) -> None:
    assert len(table) == 128
    assert len(set(table)) == 128
    assert table[0x1B] == gsm_tables.UNDEFINED
    assert table[0x20:0x24] == ' !"#' and table[0x41:0x5B] == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.parametrize("single", [gsm_tables.TURKISH_SINGLE, gsm_tables.SPANISH_SINGLE])
def test_single_shift_tables_extend_the_default_extension_table(single: dict[int, str]) -> None:
    for code, ch in gsm_tables.DEFAULT_EXTENSION.items():
        assert single[code] == ch


def test_unknown_encoding_name_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoding 'utf8'"):
        encode_message("héllo", [(0, "utf8")])
    with pytest.raises(ValueError, match=r"outside 0\.\.255"):
        encode_message("a", [(256, "gsm7")])
    with pytest.raises(ValueError, match="max_parts"):
        encode_message("a", max_parts=0)
    with pytest.raises(ValueError, match="8 bits"):
        encode_message("a", reference=256)
    assert encode_message("a" * 200, reference=65535, reference_16bit=True).part_count == 2
    with pytest.raises(ValueError, match="empty"):
        encode_message("a", [])


# --------------------------------------------------------------------------- golden bytes


def test_gsm7_golden_bytes_one_octet_per_septet() -> None:
    msg = encode_message("@£$¥ Hello_Ä")
    assert msg.encoding == "gsm7" and msg.data_coding == 0 and not msg.udh
    assert msg.parts == (b"\x00\x01\x02\x03 Hello\x11\x5b",)
    assert msg.payload is None and msg.part_count == 1 and msg.units == 12


def test_gsm7_extension_characters_are_escaped_and_cost_two_septets() -> None:
    msg = encode_message("{5€}^\f")
    assert msg.parts == (b"\x1b\x285\x1b\x65\x1b\x29\x1b\x14\x1b\x0a",)
    assert msg.units == 11  # five escaped characters and a digit


def test_every_basic_gsm_character_encodes_to_its_table_position() -> None:
    chars = "".join(c for c in gsm_tables.DEFAULT_ALPHABET if c != gsm_tables.UNDEFINED)
    msg = encode_message(chars)
    assert msg.parts == (bytes(i for i in range(128) if i != 0x1B),)


@pytest.mark.parametrize(
    ("text", "index"), [("a\x1bb", 1), ("a\x00b", 1), ("ça", 0), ("ab`", 2), ("\t", 0)]
)
def test_characters_outside_gsm_are_refused_by_gsm7(text: str, index: int) -> None:
    # U+001B is the escape position, not a character; NUL is not "@"; ç is not Ç.
    msg = encode_message(text)
    assert msg.encoding == "ucs2"
    assert msg.forced_by == Rejection("gsm7", index, text[index])


def test_ucs2_golden_bytes_with_a_surrogate_pair() -> None:
    msg = encode_message("Ωé😀", UCS2)
    assert msg.parts == (bytes.fromhex("03a900e9d83dde00"),)
    assert msg.data_coding == 8 and msg.units == 4


def test_latin1_and_ascii_golden_bytes() -> None:
    assert encode_message("déjà vu", LATIN1).parts == (b"d\xe9j\xe0 vu",)
    assert encode_message("[a`b]", ASCII).parts == (b"[a`b]",)
    assert encode_message("[a`b]", ASCII).data_coding == 1


def test_gsm7_packed_golden_bytes() -> None:
    # The classic example of TS 23.038: "hellohello" packs into 9 octets.
    msg = encode_message("hellohello", [(0, "gsm7_packed")])
    assert msg.parts == (bytes.fromhex("e8329bfd4697d9ec37"),)
    assert msg.units == 10


def test_concatenation_udh_golden_bytes() -> None:
    msg = encode_message("a" * 161, reference=0xAB)
    assert msg.udh and msg.part_count == 2
    assert msg.parts[0] == concat8(0xAB, 2, 1) + b"a" * 153
    assert msg.parts[1] == concat8(0xAB, 2, 2) + b"a" * 8
    assert msg.part_ends == (153, 161)
    assert msg.part_capacity == 153


def test_sixteen_bit_reference_udh_golden_bytes_and_152_septet_parts() -> None:
    msg = encode_message("a" * 305, reference=0x1234, reference_16bit=True)
    assert msg.part_count == 3
    assert msg.parts[0] == bytes.fromhex("06080412340301") + b"a" * 152
    assert msg.parts[2] == bytes.fromhex("06080412340303") + b"a"
    assert msg.part_capacity == 152


def test_build_udh() -> None:
    assert build_udh([(0x00, bytes((7, 2, 1))), (0x24, b"\x01")]) == bytes.fromhex(
        "080003070201240101"
    )
    with pytest.raises(ValueError, match="does not fit"):
        build_udh([(0x70, bytes(140))])


# --------------------------------------------------------------------------- capacity


def test_gsm7_160_septets_fit_one_sms_161_need_two() -> None:
    one = encode_message("a" * 160)
    assert one.part_count == 1 and not one.udh and one.part_capacity == 160
    two = encode_message("a" * 161)
    assert two.part_count == 2 and [len(p) - 6 for p in two.parts] == [153, 8]


def test_extension_characters_count_two_at_the_single_sms_limit() -> None:
    assert encode_message("a" * 158 + "€").part_count == 1  # 160 septets
    msg = encode_message("a" * 159 + "€")  # 161 septets, 160 characters
    assert msg.part_count == 2 and msg.units == 161


def test_gsm7_parts_hold_153_septets() -> None:
    three = encode_message("b" * 459)
    assert three.part_count == 3 and all(len(p) == 6 + 153 for p in three.parts)
    assert encode_message("b" * 460).part_count == 4


def test_an_escape_is_never_split_from_its_character() -> None:
    text = "a" * 152 + "€" + "b" * 10
    msg = encode_message(text)
    assert msg.part_count == 2
    assert msg.parts[0] == concat8(0, 2, 1) + b"a" * 152  # 152 septets: € moved on whole
    assert msg.parts[1] == concat8(0, 2, 2) + b"\x1be" + b"b" * 10
    assert msg.part_ends == (152, 163)
    # One septet earlier, the escape pair fits exactly.
    msg = encode_message("a" * 151 + "€" + "b" * 10)
    assert msg.parts[0] == concat8(0, 2, 1) + b"a" * 151 + b"\x1be"
    assert msg.part_ends == (152, 162)


def test_ucs2_70_units_fit_one_sms_71_need_two() -> None:
    one = encode_message("ж" * 70)
    assert one.encoding == "ucs2" and one.part_count == 1 and len(one.parts[0]) == 140
    two = encode_message("ж" * 71)
    assert two.part_count == 2 and [len(p) - 6 for p in two.parts] == [134, 8]
    assert two.part_ends == (67, 71)


def test_characters_outside_the_bmp_take_two_utf16_units() -> None:
    assert encode_message("a" * 68 + "😀").part_count == 1  # 70 units
    msg = encode_message("a" * 69 + "😀")  # 70 characters, 71 units
    assert msg.part_count == 2 and msg.units == 71


def test_a_surrogate_pair_is_never_split() -> None:
    text = "ж" * 66 + "😀" + "b" * 10
    msg = encode_message(text)
    assert msg.parts[0] == concat8(0, 2, 1) + ("ж" * 66).encode("utf-16-be")
    assert msg.parts[1][6:8] == b"\xd8\x3d"
    assert msg.part_ends == (66, 77)


def test_latin1_140_octets_then_134_per_part() -> None:
    assert encode_message("é" * 140, LATIN1).part_count == 1
    msg = encode_message("é" * 141, LATIN1)
    assert msg.part_count == 2 and [len(p) - 6 for p in msg.parts] == [134, 7]


def test_ascii_160_then_153_per_part() -> None:
    assert encode_message("x" * 160, ASCII).part_count == 1
    msg = encode_message("x" * 161, ASCII)
    assert [len(p) - 6 for p in msg.parts] == [153, 8]
    # IA5 has no escape: 0x1B at a part boundary is an ordinary character.
    msg = encode_message("x" * 152 + "\x1b" + "y" * 10, ASCII)
    assert msg.parts[0].endswith(b"\x1b") and msg.part_ends == (153, 163)


def test_packed_parts_fit_140_octets_with_fill_bits() -> None:
    msg = encode_message("a" * 306, [(0, "gsm7_packed")], reference=9)
    assert msg.part_count == 2
    assert all(len(p) == 140 for p in msg.parts)  # 6 + ceil((1 + 153 * 7) / 8)
    assert msg.parts[0][:6] == concat8(9, 2, 1)
    assert msg.parts[0][6] == ord("a") << 1 & 0xFF  # one fill bit first


# --------------------------------------------------------------------------- choice


def test_emoji_moves_the_text_to_ucs2_and_says_which_character() -> None:
    msg = encode_message("Merci 😀 !")
    assert msg.encoding == "ucs2" and msg.data_coding == 8
    assert msg.rejected == (Rejection("gsm7", 6, "😀"),)
    assert msg.forced_by == Rejection("gsm7", 6, "😀")
    assert encode_message("Merci !").forced_by is None


def test_first_encoding_taking_the_whole_text_wins() -> None:
    mapping = [(0, "gsm7"), (3, "latin1"), (8, "ucs2")]
    msg = encode_message("Ça coûte cher", mapping)
    assert msg.encoding == "latin1" and msg.data_coding == 3
    assert msg.forced_by == Rejection("gsm7", 5, "û")
    msg = encode_message("Ça coûte 5 € 😀", mapping)
    assert msg.encoding == "ucs2"
    assert msg.rejected == (Rejection("gsm7", 5, "û"), Rejection("latin1", 11, "€"))


def test_unencodable_text_names_the_character_and_its_position() -> None:
    with pytest.raises(UnencodableText) as caught:
        encode_message("Prix 5€ 😀 ok", [(0, "gsm7"), (3, "latin1")])
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.char == "😀" and err.index == 8
    assert "'😀'" in str(err) and "U+1F600" in str(err)
    assert "index 8 (0-based)" in str(err)
    assert [r.encoding for r in err.rejected] == ["gsm7", "latin1"]


def test_unencodable_with_transliteration_names_the_first_character_without_equivalent() -> None:
    with pytest.raises(UnencodableText, match=r"'♥' \(U\+2665\) at index 3"):
        encode_message("çà ♥", GSM, transliterate=True)


def test_a_lone_surrogate_is_unencodable_even_in_ucs2() -> None:
    with pytest.raises(UnencodableText, match=r"U\+D83D"):
        encode_message("ab\ud83d", UCS2)


# --------------------------------------------------------------------------- transliteration

FRENCH = (
    "Bonjour Françoise, l’été arrive : profitez de –20 % sur nos crêpes à la fête de "
    "l’île, c’est génial ! Répondez STOP pour ne plus recevoir nos offres. Merci, à bientôt"
)


def test_french_text_stays_gsm7_at_160_characters_with_transliteration() -> None:
    text = FRENCH[:160]
    assert len(text) == 160
    without = encode_message(text)
    assert without.encoding == "ucs2" and without.part_count == 3
    assert without.forced_by == Rejection("gsm7", text.index("ç"), "ç")

    msg = encode_message(text, transliterate=True)
    assert msg.encoding == "gsm7" and msg.part_count == 1 and not msg.udh
    assert msg.units == 160 and len(msg.parts[0]) == 160
    assert msg.rejected == ()
    originals = {t.original: t.replacement for t in msg.transliterated}
    assert originals == {"ç": "c", "’": "'", "ê": "e", "–": "-", "î": "i"}
    first = msg.transliterated[0]
    assert first.index == text.index("ç") and text[first.index] == "ç"
    assert msg.sent_text == (
        text.replace("ç", "c").replace("’", "'").replace("ê", "e").replace("–", "-")
        .replace("î", "i")
    )  # fmt: skip
    assert "é" in msg.sent_text and "à" in msg.sent_text  # GSM has them: kept


def test_transliteration_is_tried_per_encoding_before_the_next_one() -> None:
    # Latin-1 takes "ê" exactly, but GSM7 with transliteration comes first in the mapping.
    msg = encode_message("crêpe", [(0, "gsm7"), (3, "latin1")], transliterate=True)
    assert msg.encoding == "gsm7" and msg.sent_text == "crepe"
    # Exact beats transliterated within the same encoding.
    assert encode_message("é", [(0, "gsm7")], transliterate=True).transliterated == ()


def test_transliteration_of_multi_character_and_invisible_replacements() -> None:
    msg = encode_message("Œuvre…\u200b “ok” ½ ﬁn", GSM, transliterate=True)
    assert msg.sent_text == 'OEuvre... "ok" 1/2 fin'
    assert (0, "Œ", "OE") in msg.transliterated
    assert (6, "\u200b", "") in msg.transliterated
    assert msg.part_ends == (len("Œuvre…\u200b “ok” ½ ﬁn"),)


def test_transliteration_depends_on_the_target_encoding() -> None:
    assert encode_message("5€", ASCII, transliterate=True).sent_text == "5EUR"
    assert encode_message("5€", GSM, transliterate=True).sent_text == "5€"
    assert encode_message("straße", ASCII, transliterate=True).sent_text == "strasse"
    assert encode_message("straße", GSM, transliterate=True).sent_text == "straße"


def test_emoji_without_equivalent_moves_on_even_with_transliteration() -> None:
    msg = encode_message("Café 😀", transliterate=True)
    assert msg.encoding == "ucs2" and msg.sent_text == "Café 😀"
    assert msg.transliterated == ()
    assert msg.forced_by == Rejection("gsm7", 5, "😀")


def test_a_transliteration_is_never_split_across_parts() -> None:
    text = "a" * 152 + "œ" + "b" * 10  # "oe" would straddle the 153-septet boundary
    msg = encode_message(text, GSM, transliterate=True)
    assert msg.parts[0] == concat8(0, 2, 1) + b"a" * 152
    assert msg.parts[1][6:8] == b"oe"
    assert msg.part_ends == (152, 163)


# --------------------------------------------------------------------------- limits


def test_too_many_parts_says_needed_and_allowed() -> None:
    assert encode_message("a" * 153 * 5, max_parts=5).part_count == 5
    with pytest.raises(TooManyParts) as caught:
        encode_message("a" * (153 * 5 + 1), max_parts=5)
    err = caught.value
    assert isinstance(err, ValueError)
    assert (err.needed, err.allowed, err.encoding) == (6, 5, "gsm7")
    assert "needs 6 SMS parts" in str(err) and "at most 5" in str(err)


def test_255_parts_is_the_ceiling_whatever_max_parts_says() -> None:
    assert encode_message("a" * 153 * 255, max_parts=1000).part_count == 255
    with pytest.raises(TooManyParts, match=r"at most 255.*protocol ceiling"):
        encode_message("a" * (153 * 255 + 1), max_parts=1000)


def test_message_payload_is_one_part_with_the_whole_text() -> None:
    text = "ça va ? " * 200
    msg = encode_message(text, message_payload=True, max_parts=1)
    assert msg.parts == () and msg.part_count == 1 and not msg.udh
    assert msg.encoding == "ucs2" and msg.payload == text.encode("utf-16-be")
    assert msg.part_ends == (len(text),)
    gsm = encode_message("a" * 1000, message_payload=True)
    assert gsm.payload == b"a" * 1000 and gsm.units == 1000


def test_message_payload_is_limited_by_the_tlv_length() -> None:
    with pytest.raises(PayloadTooLong, match="65535"):
        encode_message("ж" * 40000, message_payload=True)


def test_message_payload_with_shift_tables_carries_a_udh() -> None:
    msg = encode_message("ş" * 200, [(0, "gsm7_turkish")], message_payload=True)
    assert msg.udh and msg.payload is not None
    assert msg.payload[:4] == bytes.fromhex("03250101")
    assert msg.payload[4:] == b"\x1d" * 200


# --------------------------------------------------------------------------- shift tables

TURKISH = (
    "Sayın müşterimiz, şişeleriniz ağır: kışın ılık ğöl sığ. Teşekkür ederiz! "
    "İyi günler; ığdır şubemiz çarşamba açık, başışığı ışıl ışıl."
)


def test_turkish_text_fits_one_sms_with_the_turkish_locking_shift() -> None:
    mapping = [(0, "gsm7"), (0, "gsm7_turkish"), (8, "ucs2")]
    msg = encode_message(TURKISH, mapping)
    assert msg.encoding == "gsm7_turkish" and msg.data_coding == 0
    assert msg.part_count == 1 and msg.udh
    assert (msg.locking_shift, msg.single_shift) == (1, None)
    assert msg.parts[0][:4] == bytes.fromhex("03250101")
    assert msg.units == len(TURKISH) <= 155
    assert msg.forced_by == Rejection("gsm7", TURKISH.index("ı"), "ı")
    # The same text in UCS-2 needs two parts.
    assert encode_message(TURKISH, UCS2).part_count == 2
    decoded = decode_short_message(msg.parts[0], 0, udhi=True)
    assert decoded.text == TURKISH and not decoded.replaced


def test_a_few_turkish_characters_use_the_single_shift_only() -> None:
    msg = encode_message("Teşekkürler", [(0, "gsm7_turkish")])
    assert (msg.single_shift, msg.locking_shift) == (1, None)
    assert msg.parts == (bytes.fromhex("03240101") + b"Te\x1bsekk~rler",)
    assert msg.units == 12 and msg.part_capacity == 155


def test_turkish_encoding_without_turkish_characters_needs_no_udh() -> None:
    msg = encode_message("Hello {you}", [(0, "gsm7_turkish")])
    assert not msg.udh and msg.single_shift is None and msg.locking_shift is None
    assert msg.parts == (b"Hello \x1b(you\x1b)",)


def test_spanish_has_only_a_single_shift_table() -> None:
    msg = encode_message("Canción Á", [(0, "gsm7_spanish")])
    assert (msg.single_shift, msg.locking_shift) == (2, None)
    assert msg.parts == (bytes.fromhex("03240102") + b"Canci\x1bon \x1bA",)
    with pytest.raises(UnencodableText):
        encode_message("ş", [(0, "gsm7_spanish")])


def test_shift_table_ies_reduce_the_part_capacity() -> None:
    # concat (5) + single shift (3) + UDHL = 9 octets = 11 septets: 149 per part.
    msg = encode_message("á" + "a" * 300, [(0, "gsm7_spanish")], reference=3)
    assert msg.part_capacity == 149 and msg.part_count == 3
    assert msg.parts[0][:9] == bytes.fromhex("080003030301240102")
    assert [len(p) - 9 for p in msg.parts] == [149, 149, 4]


def test_portuguese_long_text_prefers_the_table_pair_with_fewer_parts() -> None:
    text = "Informação: você não está só, ação! " * 4
    msg = encode_message(text, [(0, "gsm7_portuguese")])
    assert msg.locking_shift == 3
    assert msg.units == len(text)
    decoded = [decode_short_message(p, 0, udhi=True).text for p in msg.parts]
    assert "".join(decoded) == text


def test_portuguese_greek_letters_with_the_locking_table_need_both_ies() -> None:
    text = "ção " * 60 + "Φ"  # 361 septets with the single shift, 242 locked
    msg = encode_message(text, [(0, "gsm7_portuguese")])
    assert (msg.locking_shift, msg.single_shift) == (3, 3)
    assert msg.part_capacity == 146
    assert msg.parts[0][:12] == bytes.fromhex("0b0003000201240103250103")
    assert "".join(decode_short_message(p, 0, udhi=True).text for p in msg.parts) == text


# --------------------------------------------------------------------------- septets


def test_pack_pads_seven_spare_bits_with_cr_and_unpack_drops_it() -> None:
    packed = pack_septets(b"abcdefg")  # 49 bits in 7 octets: 7 spare bits
    assert packed[-1] >> 1 == 0x0D
    assert unpack_septets(packed) == b"abcdefg"
    assert unpack_septets(packed, count=8) == b"abcdefg\r"


def test_fill_bits_after_udh() -> None:
    assert fill_bits_after(6) == 1  # concat 8-bit
    assert fill_bits_after(7) == 0  # concat 16-bit
    assert fill_bits_after(4) == 3  # one shift IE
    packed = pack_septets(b"\x7f", 1)
    assert packed == b"\xfe" and unpack_septets(packed, 1) == b"\x7f"


def test_pack_refuses_octets_above_0x7f() -> None:
    with pytest.raises(ValueError):
        pack_septets(b"\x80")
