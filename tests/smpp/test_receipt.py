"""smsmta.smpp.receipt: id formats, Annex B, id extraction, TLV options, classification, log."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsmta.smpp.receipt import (
    DEFAULT_ERROR_REGEX,
    DEFAULT_ID_REGEX,
    DEFAULT_SUCCESS_REGEX,
    IdFormat,
    IdSource,
    Outcome,
    ReceiptRules,
    check_id_regex,
    check_stat_regex,
    format_id,
    id_disagreement_fix,
    interpret,
    parse_annex_b,
    submit_error_log,
)

ANNEX_B = (
    "id:1234567890 sub:001 dlvrd:001 submit date:1608011415 done date:1608011417"
    " stat:DELIVRD err:000 Text:Hello Adobe world"
)
UUID = "05e3299e-8d37-49d0-97c6-8e4fe60c7739"
# The example of the source document, verbatim.
UUID_TLV_REGEX = r"\b0x001E:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
WHOLE_TEXT = r"(?s)^(.*)$"  # captures the processed text itself, to look at it


def receipt_text(
    id_: str = "1234567890", stat: str = "DELIVRD", err: str = "000", text: str = "hi"
) -> str:
    return (
        f"id:{id_} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201"
        f" stat:{stat} err:{err} Text:{text}"
    )


def processed_text(short_message: str | bytes, tlvs=(), **options) -> str:
    rules = ReceiptRules.build("P", id_regex=WHOLE_TEXT, **options)
    receipt = interpret(short_message, tlvs, rules)  # the TLV overrules the whole text
    return receipt.overruled_text_id or receipt.provider_id or ""


DEFAULTS = ReceiptRules.build("ExampleProvider")


# --- regex checks ----------------------------------------------------------------------------


def test_default_regexes_compile_and_id_regex_has_one_group():
    assert check_id_regex(DEFAULT_ID_REGEX).groups == 1
    assert check_stat_regex(DEFAULT_SUCCESS_REGEX).search("DELIVRD")
    assert check_stat_regex(DEFAULT_ERROR_REGEX).search("UNDELIV")


@pytest.mark.parametrize(
    ("pattern", "groups"), [(r"id:\w+", 0), (r"(id):(\w+)", 2), (r"(a)(b)(c)", 3)]
)
def test_check_id_regex_refuses_other_group_counts(pattern, groups):
    with pytest.raises(ValueError, match=f"exactly one capture group, it has {groups}$"):
        check_id_regex(pattern)


def test_check_id_regex_accepts_one_group_beside_non_capturing_ones():
    assert check_id_regex(r"(?:msg)?id:(\w+)(?:\s|$)").groups == 1


def test_check_id_regex_names_a_syntax_error():
    with pytest.raises(
        ValueError, match=r"SR id regex .* is not a valid regular expression: missing \)"
    ):
        check_id_regex(r"id:(\w+")


def test_rules_build_names_the_bad_stat_regex():
    with pytest.raises(ValueError, match="SR error regex"):
        ReceiptRules.build("P", error_regex="[")
    with pytest.raises(ValueError, match="SR success regex"):
        ReceiptRules.build("P", success_regex="(")
    with pytest.raises(ValueError, match="exactly one capture group"):
        ReceiptRules.build("P", id_regex="id:x")


def test_rules_build_accepts_format_names_from_settings():
    rules = ReceiptRules.build("P", sr_id_format="hex_number", mt_ack_id_format="decimal")
    assert rules.sr_id_format is IdFormat.HEX_NUMBER
    assert rules.mt_ack_id_format is IdFormat.DECIMAL


# --- id formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (" 0042 ", IdFormat.AS_IS, " 0042 "),
        ("abc-DEF", IdFormat.AS_IS, "abc-DEF"),
        ("", IdFormat.AS_IS, ""),
        ("0000012345", IdFormat.DECIMAL, "12345"),
        ("  987  ", IdFormat.DECIMAL, "987"),
        ("0", IdFormat.DECIMAL, "0"),
        ("0000", IdFormat.DECIMAL, "0"),
        ("1F", IdFormat.HEX_NUMBER, "31"),
        ("1f", IdFormat.HEX_NUMBER, "31"),
        ("00FF", IdFormat.HEX_NUMBER, "255"),
        ("0", IdFormat.HEX_NUMBER, "0"),
        ("0x1F", IdFormat.HEX_NUMBER, "31"),  # tolerated though the spec says without
        ("1Fh", IdFormat.HEX_NUMBER, "31"),
        ("FFFFFFFFFFFFFFFFFFFF", IdFormat.HEX_NUMBER, str(2**80 - 1)),
        ("414243", IdFormat.HEX_STRING, "ABC"),
        ("616263", IdFormat.HEX_STRING, "abc"),
        ("3132333435", IdFormat.HEX_STRING, "12345"),
        ("4142434400", IdFormat.HEX_STRING, "ABCD"),  # the C-string NUL is dropped
        (" 4a4B ", IdFormat.HEX_STRING, "JK"),
    ],
)
def test_format_id(raw, fmt, expected):
    assert format_id(raw, fmt) == expected


@pytest.mark.parametrize(
    ("raw", "fmt", "message"),
    [
        ("12a", IdFormat.DECIMAL, r"id '12a' is not a decimal number \(id format decimal\)"),
        ("", IdFormat.DECIMAL, "not a decimal number"),
        ("   ", IdFormat.DECIMAL, "not a decimal number"),
        ("-12", IdFormat.DECIMAL, "not a decimal number"),
        ("١٢٣", IdFormat.DECIMAL, "not a decimal number"),  # Arabic-Indic digits
        ("1 2", IdFormat.DECIMAL, "not a decimal number"),
        ("xyz", IdFormat.HEX_NUMBER, r"'xyz' is not a hexadecimal number \(id format hex_number"),
        ("", IdFormat.HEX_NUMBER, "not a hexadecimal number"),
        ("+1F", IdFormat.HEX_NUMBER, "not a hexadecimal number"),
        ("1_F", IdFormat.HEX_NUMBER, "not a hexadecimal number"),
        ("0x", IdFormat.HEX_NUMBER, "not a hexadecimal number"),
        ("41424", IdFormat.HEX_STRING, r"'41424' is not an even-length hexadecimal string"),
        ("zz", IdFormat.HEX_STRING, "not an even-length hexadecimal string"),
        ("41 42", IdFormat.HEX_STRING, "not an even-length hexadecimal string"),
        ("", IdFormat.HEX_STRING, "not an even-length hexadecimal string"),
        ("FF", IdFormat.HEX_STRING, r"'FF' does not decode to printable ASCII"),
        ("c3a9", IdFormat.HEX_STRING, "does not decode to printable ASCII"),  # UTF-8 "é"
        ("0041", IdFormat.HEX_STRING, "does not decode to printable ASCII"),  # inner NUL
        ("00", IdFormat.HEX_STRING, "does not decode to printable ASCII"),
        ("1" * 300, IdFormat.DECIMAL, "too long for id format decimal"),
    ],
)
def test_format_id_errors_name_the_id_and_the_format(raw, fmt, message):
    with pytest.raises(ValueError, match=message):
        format_id(raw, fmt)


@given(st.integers(min_value=0, max_value=2**128))
def test_hex_number_and_decimal_agree(n):
    assert format_id(f"{n:x}", IdFormat.HEX_NUMBER) == str(n)
    assert format_id(f"{n:X}", IdFormat.HEX_NUMBER) == str(n)
    assert format_id(f"000{n}", IdFormat.DECIMAL) == str(n)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40))
def test_hex_string_round_trip(text):
    assert format_id(text.encode().hex(), IdFormat.HEX_STRING) == text
    assert format_id(text.encode().hex().upper(), IdFormat.HEX_STRING) == text


@given(st.text(max_size=60), st.sampled_from(list(IdFormat)))
def test_format_id_raises_only_value_error(raw, fmt):
    try:
        result = format_id(raw, fmt)
    except ValueError:
        return
    assert isinstance(result, str)


def test_mt_ack_and_sr_ids_meet_in_canonical_form():
    # The ack carries hex, the receipt decimal padded to 10 digits: both give "8010".
    mt_ack = format_id("1F4A", IdFormat.HEX_NUMBER)
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.DECIMAL)
    receipt = interpret(receipt_text(id_="0000008010"), (), rules)
    assert receipt.provider_id == mt_ack == "8010"
    # The ack carries the id as hex-written bytes, the receipt the text itself.
    mt_ack = format_id("4142433132", IdFormat.HEX_STRING)
    receipt = interpret(receipt_text(id_="ABC12"), (), DEFAULTS)
    assert receipt.provider_id == mt_ack == "ABC12"


# --- Annex B ---------------------------------------------------------------------------------


def test_parse_annex_b_reference_example():
    assert parse_annex_b(ANNEX_B) == {
        "id": "1234567890",
        "sub": "001",
        "dlvrd": "001",
        "submit date": "1608011415",
        "done date": "1608011417",
        "stat": "DELIVRD",
        "err": "000",
        "text": "Hello Adobe world",
    }


def test_parse_annex_b_field_names_are_case_insensitive():
    fields = parse_annex_b(
        "ID:abc SUB:001 DlVrD:001 Submit Date:1608011415 DONE DATE:1608011417"
        " Stat:DELIVRD ERR:000 TEXT:Hi"
    )
    assert fields == {
        "id": "abc",
        "sub": "001",
        "dlvrd": "001",
        "submit date": "1608011415",
        "done date": "1608011417",
        "stat": "DELIVRD",
        "err": "000",
        "text": "Hi",
    }


def test_parse_annex_b_missing_and_unknown_fields():
    assert parse_annex_b("id:77 stat:UNDELIV") == {"id": "77", "stat": "UNDELIV"}
    assert parse_annex_b("id:77 mccmnc:20801 stat:DELIVRD price:0.05 err:000") == {
        "id": "77",
        "mccmnc": "20801",
        "stat": "DELIVRD",
        "price": "0.05",
        "err": "000",
    }
    assert parse_annex_b("") == {}
    assert parse_annex_b("no fields here") == {}


def test_parse_annex_b_tolerates_extra_spaces_tabs_and_newlines():
    fields = parse_annex_b(
        "  id: 42   sub:001\tsubmit   date:2401011200\r\nstat:  DELIVRD\x0berr:0 "
    )
    assert fields == {
        "id": "42",
        "sub": "001",
        "submit date": "2401011200",
        "stat": "DELIVRD",
        "err": "0",
    }


def test_parse_annex_b_text_runs_to_the_end_with_spaces_and_colons():
    fields = parse_annex_b("id:1 stat:DELIVRD err:000 Text:Meet at 10:30, stat:fake id:9 ok ")
    assert fields["text"] == "Meet at 10:30, stat:fake id:9 ok"
    assert fields["stat"] == "DELIVRD"
    assert fields["id"] == "1"
    assert parse_annex_b("text:") == {"text": ""}
    assert parse_annex_b("Text:a:b:c") == {"text": "a:b:c"}


def test_parse_annex_b_colons_inside_values_and_names_inside_words():
    fields = parse_annex_b(
        "id:5 submit date:2016-08-01 14:15:00 url:http://x.example/a context:zz err:001"
    )
    assert fields == {
        "id": "5",
        "submit date": "2016-08-01 14:15:00",
        "url": "http://x.example/a",
        "context": "zz",  # not a Text: field
        "err": "001",
    }


def test_parse_annex_b_first_occurrence_wins():
    assert parse_annex_b("stat:ENROUTE stat:DELIVRD")["stat"] == "ENROUTE"


def test_parse_annex_b_non_ascii_text():
    fields = parse_annex_b("id:1 stat:DELIVRD err:000 İnfo:x text:Ça coûte 5€")
    assert fields["text"] == "Ça coûte 5€"
    assert fields["İnfo".lower()] == "x"
    assert fields["stat"] == "DELIVRD"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["id", "sub", "dlvrd", "submit date", "done date", "stat", "err"]),
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
        ),
        unique_by=lambda pair: pair[0],
    ),
    st.text(max_size=30),
)
def test_parse_annex_b_reads_back_what_was_written(pairs, text):
    written = " ".join(f"{name}:{value}" for name, value in pairs) + " Text:" + text
    fields = parse_annex_b(written)
    for name, value in pairs:
        if ":" not in value:  # "sub:a:b" is ambiguous by construction
            assert fields[name] == value
    assert fields["text"] == text.strip()


@given(st.text(max_size=300))
def test_parse_annex_b_never_raises(text):
    fields = parse_annex_b(text)
    assert all(key == key.lower() for key in fields)


# --- default id regex on real-world receipt styles -------------------------------------------


@pytest.mark.parametrize(
    ("short_message", "expected"),
    [
        (ANNEX_B, "1234567890"),
        # Kannel-like: lower-case `text:`, empty text
        (
            "id:0983214562 sub:001 dlvrd:001 submit date:2401011200 done date:2401011205"
            " stat:DELIVRD err:000 text:",
            "0983214562",
        ),
        # hex id, upper-case names, no Text at all
        ("ID:1A2B3C4D5E SUB:001 DLVRD:001 STAT:DELIVRD ERR:000", "1A2B3C4D5E"),
        ("id:7f3a stat:DELIVRD err:000", "7f3a"),
        # short decimal ids and the field not first
        ("sub:001 id:42 stat:DELIVRD", "42"),
        # spaces after the colon, an id ended by punctuation
        ("id: 12345 sub:001 stat:DELIVRD err:000", "12345"),
        ("id:  77 stat:DELIVRD", "77"),
        ("id:abc123, stat:DELIVRD", "abc123"),
        ("id:abc123;stat:DELIVRD", "abc123"),
        ("stat:DELIVRD id:42.", "42"),
    ],
)
def test_default_id_regex_on_common_styles(short_message, expected):
    receipt = interpret(short_message.encode(), (), DEFAULTS)
    assert receipt.provider_id == expected
    assert receipt.id_source is IdSource.REGEX
    assert receipt.id_error is None


def test_default_id_regex_ignores_id_inside_other_words():
    receipt = interpret(b"msgid:12345 stat:DELIVRD err:000", (), DEFAULTS)
    assert receipt.provider_id is None
    assert receipt.id_source is IdSource.NONE
    assert "found no id" in receipt.id_error


def test_default_id_regex_refuses_to_truncate_a_long_id():
    # 16 characters: keeping the first 10 would never match the MT; better no id at all,
    # so receipted_message_id (when present) is used instead.
    text = receipt_text(id_="0123456789abcdef").encode()
    assert interpret(text, (), DEFAULTS).provider_id is None
    receipt = interpret(text, [(0x001E, b"0123456789abcdef\x00")], DEFAULTS)
    assert receipt.provider_id == "0123456789abcdef"
    assert receipt.id_source is IdSource.RECEIPTED_MESSAGE_ID


def test_uuid_ids_need_a_custom_regex():
    text = receipt_text(id_=UUID).encode()
    # The default id ends at punctuation (SPEC section 4): "05e3299e", which names no MT;
    # receipted_message_id, when present, overrules it (see the disagreement tests).
    default = interpret(text, (), DEFAULTS)
    assert default.provider_id == UUID[:8]
    rules = ReceiptRules.build(
        "P", id_regex=r"(?i)\bid:([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})"
    )
    receipt = interpret(text, (), rules)
    assert receipt.provider_id == UUID
    assert receipt.stat == "DELIVRD"
    assert receipt.outcome is Outcome.DELIVERED


def test_first_match_wins():
    rules = ReceiptRules.build("P", id_regex=r"\bref=(\w+)")
    assert interpret(b"ref=AAA ref=BBB stat:DELIVRD", (), rules).provider_id == "AAA"


def test_empty_capture_is_no_id():
    rules = ReceiptRules.build("P", id_regex=r"id:(\d*)")
    receipt = interpret(b"id: stat:DELIVRD id:55", (), rules)
    assert receipt.provider_id == "55"
    receipt = interpret(b"id: stat:DELIVRD", (), rules)
    assert receipt.provider_id is None
    assert receipt.id_source is IdSource.NONE


# --- SR id format applied to the extracted id ------------------------------------------------


def test_sr_id_format_applies_to_the_extracted_id():
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.DECIMAL)
    receipt = interpret(receipt_text(id_="0000012345").encode(), (), rules)
    assert (receipt.provider_id, receipt.raw_id) == ("12345", "0000012345")
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.HEX_NUMBER)
    assert interpret(receipt_text(id_="ff").encode(), (), rules).provider_id == "255"
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.HEX_STRING)
    assert interpret(receipt_text(id_="414243").encode(), (), rules).provider_id == "ABC"


def test_a_failed_conversion_gives_no_id_and_a_reason_never_an_exception():
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.DECIMAL)
    receipt = interpret(receipt_text(id_="12ab").encode(), (), rules)
    assert receipt.provider_id is None
    assert receipt.raw_id == "12ab"
    assert receipt.id_source is IdSource.NONE
    assert receipt.id_error == "id '12ab' is not a decimal number (id format decimal)"
    assert receipt.outcome is Outcome.DELIVERED  # the rest of the receipt is still read


# --- optional fields (TLVs) appended to the text ---------------------------------------------


def test_tlvs_are_appended_as_0xTAG_VALUE_when_the_option_is_on():
    tlvs = [
        (0x001E, (UUID + "\x00").encode()),  # text, C-string
        (0x0427, b"\x02"),  # message_state: binary, skipped
        (0x0423, b"\x03\x00\x01"),  # network_error_code: binary, skipped
        (0x1401, "opérateur".encode()),  # UTF-8 text
        (0x0010, b"\xff\xfe"),  # not UTF-8, skipped
        (0xABCD, b""),  # empty, skipped
    ]
    assert (
        processed_text("stat:DELIVRD", tlvs, id_in_optional_fields=True)
        == f"stat:DELIVRD 0x001E:{UUID} 0x1401:opérateur"
    )
    assert processed_text("stat:DELIVRD", tlvs) == "stat:DELIVRD"  # option off


def test_tag_is_four_upper_case_hex_digits():
    assert processed_text("", [(0x5, b"x"), (0xBEEF, b"y")], id_in_optional_fields=True) == (
        " 0x0005:x 0xBEEF:y"
    )


def test_custom_regex_captures_the_id_from_an_appended_tlv():
    rules = ReceiptRules.build("P", id_regex=UUID_TLV_REGEX, id_in_optional_fields=True)
    short_message = b"sub:001 dlvrd:001 stat:DELIVRD err:000 Text:Hello"
    receipt = interpret(short_message, [(0x001E, (UUID + "\x00").encode())], rules)
    assert receipt.provider_id == UUID
    assert receipt.id_source is IdSource.REGEX  # found by the regex, in the appended text
    assert receipt.text == short_message.decode()  # the original text is not altered
    rules = ReceiptRules.build("P", id_regex=UUID_TLV_REGEX)  # option off: nothing to capture
    receipt = interpret(short_message, [(0x0427, b"\x02")], rules)
    assert receipt.provider_id is None


def test_tlvs_are_appended_after_the_text_cut():
    text = "id:1 stat:DELIVRD Text:hello"
    tlvs = [(0x001E, b"abc")]
    assert processed_text(text, tlvs, id_in_optional_fields=True) == "id:1 stat:DELIVRD 0x001E:abc"
    assert (
        processed_text(text, tlvs, id_in_optional_fields=True, id_in_text_field=True)
        == "id:1 stat:DELIVRD Text:hello 0x001E:abc"
    )


# --- the Text: sub-field ---------------------------------------------------------------------


def test_text_field_is_cut_before_the_regexes_unless_the_option_is_on():
    short_message = b"sub:001 dlvrd:001 stat:DELIVRD err:000 Text:your id:4242 here"
    off = interpret(short_message, (), DEFAULTS)
    assert off.provider_id is None
    rules_on = ReceiptRules.build("P", id_in_text_field=True)
    on = interpret(short_message, (), rules_on)
    assert on.provider_id == "4242"
    assert off.text == on.text == short_message.decode()  # the log keeps the whole text
    assert off.log_text.endswith("Text:your id:4242 here")


def test_text_cut_is_case_insensitive_and_only_cuts_a_field_name():
    assert processed_text("id:1 TEXT:id:2") == "id:1"
    assert processed_text("id:1 tExT:x") == "id:1"
    assert processed_text("id:1 context:x") == "id:1 context:x"
    assert processed_text("Text:id:2") == ""


# --- stat, err, classification ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("stat", "outcome"),
    [
        ("DELIVRD", Outcome.DELIVERED),
        ("DELIVERED", Outcome.DELIVERED),
        ("delivrd", Outcome.DELIVERED),
        ("UNDELIV", Outcome.FAILED),
        ("REJECTD", Outcome.FAILED),
        ("REJECTED", Outcome.FAILED),
        ("FAILED", Outcome.FAILED),
        ("failed", Outcome.FAILED),
        ("EXPIRED", Outcome.FAILED),
        ("DELETED", Outcome.FAILED),
        ("UNKNOWN", Outcome.FAILED),
        ("ENROUTE", Outcome.INTERMEDIATE),
        ("ACCEPTD", Outcome.INTERMEDIATE),
        ("BUFFRED", Outcome.INTERMEDIATE),
        ("XDELIVRD", Outcome.INTERMEDIATE),  # the defaults are anchored
    ],
)
def test_default_classification(stat, outcome):
    receipt = interpret(receipt_text(stat=stat).encode(), (), DEFAULTS)
    assert receipt.stat == stat
    assert receipt.outcome is outcome
    assert DEFAULTS.classify(stat) is outcome


def test_no_stat_at_all_is_intermediate():
    receipt = interpret(b"id:123", (), DEFAULTS)
    assert (receipt.stat, receipt.err, receipt.outcome) == (None, None, Outcome.INTERMEDIATE)
    assert DEFAULTS.classify(None) is Outcome.INTERMEDIATE


def test_custom_classification_regexes():
    rules = ReceiptRules.build("P", success_regex=r"^(?:OK|DELIVRD)$", error_regex=r"^(?:KO|ERR)")
    assert interpret(b"id:1 stat:OK", (), rules).outcome is Outcome.DELIVERED
    assert interpret(b"id:1 stat:DELIVRD", (), rules).outcome is Outcome.DELIVERED
    assert interpret(b"id:1 stat:DELIVERED", (), rules).outcome is Outcome.INTERMEDIATE
    assert interpret(b"id:1 stat:ERR42", (), rules).outcome is Outcome.FAILED
    assert interpret(b"id:1 stat:UNDELIV", (), rules).outcome is Outcome.INTERMEDIATE


def test_success_regex_is_tried_before_the_error_regex():
    rules = ReceiptRules.build("P", success_regex="D", error_regex="D")
    assert rules.classify("DELETED") is Outcome.DELIVERED


# --- TLV fallbacks ---------------------------------------------------------------------------


def test_receipted_message_id_is_the_fallback_and_the_source_is_reported():
    receipt = interpret(b"stat:DELIVRD err:000", [(0x001E, b"A1B2C3\x00")], DEFAULTS)
    assert receipt.provider_id == "A1B2C3"
    assert receipt.id_source is IdSource.RECEIPTED_MESSAGE_ID
    assert receipt.id_error is None


def test_the_text_id_is_kept_when_it_agrees_with_receipted_message_id():
    receipt = interpret(receipt_text(id_="111").encode(), [(0x001E, b"111\x00")], DEFAULTS)
    assert (receipt.provider_id, receipt.id_source) == ("111", IdSource.REGEX)
    assert receipt.overruled_text_id is None
    # agreeing once formatted: hex MT-ack id in the TLV, decimal id in the text
    rules = ReceiptRules.build(
        "P", mt_ack_id_format=IdFormat.HEX_NUMBER, sr_id_format=IdFormat.DECIMAL
    )
    receipt = interpret(receipt_text(id_="1234").encode(), [(0x001E, b"4D2\x00")], rules)
    assert (receipt.provider_id, receipt.id_source) == ("1234", IdSource.REGEX)
    assert receipt.overruled_text_id is None


def test_receipted_message_id_decides_when_the_two_ids_disagree():
    # Hex submit ids, decimal text ids, default formats: the text id "1234" would name
    # the message whose hex id is "1234", another one; the TLV names the right one.
    receipt = interpret(receipt_text(id_="1234").encode(), [(0x001E, b"4D2\x00")], DEFAULTS)
    assert (receipt.provider_id, receipt.id_source) == ("4D2", IdSource.RECEIPTED_MESSAGE_ID)
    assert (receipt.raw_id, receipt.overruled_text_id) == ("4D2", "1234")
    assert receipt.id_error is None
    assert id_disagreement_fix(receipt, DEFAULTS) == (
        "mt_ack_id_format: hex_number with sr_id_format: decimal would make the text id agree"
    )
    # the MT-ack id format already right: only the SR id format is named
    rules = ReceiptRules.build("P", mt_ack_id_format=IdFormat.HEX_NUMBER)
    receipt = interpret(receipt_text(id_="4d2").encode(), [(0x001E, b"4D2\x00")], rules)
    assert (receipt.provider_id, receipt.overruled_text_id) == ("1234", "4d2")
    assert id_disagreement_fix(receipt, rules) == (
        "sr_id_format: hex_number would make the text id agree"
    )


def test_a_text_id_unreadable_in_the_sr_id_format_is_a_disagreement_too():
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.DECIMAL)
    receipt = interpret(receipt_text(id_="12ab").encode(), [(0x001E, b"12ab\x00")], rules)
    assert (receipt.provider_id, receipt.id_source) == ("12ab", IdSource.RECEIPTED_MESSAGE_ID)
    assert receipt.overruled_text_id == "12ab"
    assert id_disagreement_fix(receipt, rules) == (
        "sr_id_format: as_is would make the text id agree"
    )


def test_a_cut_text_id_names_sr_id_regex():
    text = receipt_text(id_=UUID).encode()
    receipt = interpret(text, [(0x001E, (UUID + "\x00").encode())], DEFAULTS)
    assert (receipt.provider_id, receipt.overruled_text_id) == (UUID, UUID[:8])
    fix = id_disagreement_fix(receipt, DEFAULTS)
    assert fix.startswith("sr_id_regex: ") and "cut" in fix


def test_no_setting_reconciles_unrelated_ids():
    receipt = interpret(receipt_text(id_="111").encode(), [(0x001E, b"222\x00")], DEFAULTS)
    assert (receipt.provider_id, receipt.overruled_text_id) == ("222", "111")
    assert id_disagreement_fix(receipt, DEFAULTS).startswith("no id format makes")


def test_receipted_message_id_uses_the_mt_ack_id_format():
    # It carries the submit_sm_resp message_id, so it is read like one.
    rules = ReceiptRules.build(
        "P", sr_id_format=IdFormat.DECIMAL, mt_ack_id_format=IdFormat.HEX_NUMBER
    )
    receipt = interpret(b"stat:DELIVRD", [(0x001E, b"1f4a\x00")], rules)
    assert receipt.provider_id == format_id("1f4a", IdFormat.HEX_NUMBER) == "8010"


def test_receipted_message_id_after_a_failed_sr_conversion():
    rules = ReceiptRules.build("P", sr_id_format=IdFormat.DECIMAL)
    receipt = interpret(receipt_text(id_="12ab").encode(), [(0x001E, b"777\x00")], rules)
    assert (receipt.provider_id, receipt.id_source, receipt.raw_id) == (
        "777",
        IdSource.RECEIPTED_MESSAGE_ID,
        "777",
    )


def test_both_ids_unusable_gives_both_reasons():
    rules = ReceiptRules.build("P", mt_ack_id_format=IdFormat.DECIMAL)
    receipt = interpret(b"stat:DELIVRD", [(0x001E, b"xyz\x00")], rules)
    assert receipt.provider_id is None
    assert receipt.id_source is IdSource.NONE
    assert "found no id" in receipt.id_error
    assert "receipted_message_id: id 'xyz' is not a decimal number" in receipt.id_error


def test_blank_receipted_message_id_is_ignored():
    receipt = interpret(b"stat:DELIVRD", [(0x001E, b"\x00"), (0x001E, b"9\x00")], DEFAULTS)
    assert receipt.provider_id is None  # the first one counts, and it is empty


@pytest.mark.parametrize(
    ("state", "stat", "outcome"),
    [
        (1, "ENROUTE", Outcome.INTERMEDIATE),
        (2, "DELIVRD", Outcome.DELIVERED),
        (3, "EXPIRED", Outcome.FAILED),
        (4, "DELETED", Outcome.FAILED),
        (5, "UNDELIV", Outcome.FAILED),
        (6, "ACCEPTD", Outcome.INTERMEDIATE),
        (7, "UNKNOWN", Outcome.FAILED),
        (8, "REJECTD", Outcome.FAILED),
        (0, None, Outcome.INTERMEDIATE),
        (200, None, Outcome.INTERMEDIATE),
    ],
)
def test_message_state_tlv_is_the_stat_fallback(state, stat, outcome):
    receipt = interpret(b"", [(0x001E, b"42\x00"), (0x0427, bytes([state]))], DEFAULTS)
    assert receipt.provider_id == "42"
    assert receipt.stat == stat
    assert receipt.outcome is outcome


def test_network_error_code_tlv_is_the_err_fallback():
    tlvs = [(0x0427, b"\x05"), (0x0423, b"\x03\x04\x01")]  # GSM, error 1025
    receipt = interpret(b"id:9", tlvs, DEFAULTS)
    assert (receipt.stat, receipt.err) == ("UNDELIV", "1025")
    receipt = interpret(b"id:9", [(0x0423, b"\x03\x00\x01")], DEFAULTS)
    assert receipt.err == "001"
    receipt = interpret(b"id:9", [(0x0423, b"\x03\x01")], DEFAULTS)  # malformed: ignored
    assert receipt.err is None


def test_text_stat_and_err_win_over_the_tlvs():
    tlvs = [(0x0427, b"\x05"), (0x0423, b"\x03\x00\x01")]
    receipt = interpret(receipt_text(stat="DELIVRD", err="000").encode(), tlvs, DEFAULTS)
    assert (receipt.stat, receipt.err, receipt.outcome) == ("DELIVRD", "000", Outcome.DELIVERED)


def test_stat_and_err_from_the_text_field_when_that_option_is_on():
    short_message = b"id:77 sub:001 dlvrd:000 Text:stat:UNDELIV err:034"
    off = interpret(short_message, (), DEFAULTS)
    assert (off.stat, off.err, off.outcome) == (None, None, Outcome.INTERMEDIATE)
    rules = ReceiptRules.build("P", id_in_text_field=True)
    on = interpret(short_message, (), rules)
    assert (on.provider_id, on.stat, on.err, on.outcome) == ("77", "UNDELIV", "034", Outcome.FAILED)
    assert on.log_key == "SR P UNDELIV 034|#MESSAGE#"
    # the fields before Text: still win
    both = interpret(b"id:77 stat:DELIVRD err:000 Text:stat:UNDELIV err:034", (), rules)
    assert (both.stat, both.err) == ("DELIVRD", "000")


def test_stat_and_err_from_text_tlvs_when_that_option_is_on():
    tlvs = [(0x1401, b"stat:REJECTED err:012\x00"), (0x0427, b"\x02")]
    off = interpret(b"id:5", tlvs, DEFAULTS)
    assert (off.stat, off.err) == ("DELIVRD", None)  # message_state: the last resort
    rules = ReceiptRules.build("P", id_in_optional_fields=True)
    on = interpret(b"id:5", tlvs, rules)
    assert (on.stat, on.err, on.outcome) == ("REJECTED", "012", Outcome.FAILED)
    assert interpret(b"id:5 stat:DELIVRD", tlvs, rules).stat == "DELIVRD"


def test_message_payload_carries_the_text_when_short_message_is_empty():
    payload = receipt_text(id_="31337").encode()
    rules = ReceiptRules.build("P", id_in_optional_fields=True)
    receipt = interpret(b"", [(0x0424, payload)], rules)
    assert receipt.provider_id == "31337"
    assert receipt.text == payload.decode()
    assert processed_text(b"", [(0x0424, b"id:1 Text:x")], id_in_optional_fields=True) == "id:1"


# --- message log -----------------------------------------------------------------------------


def test_message_log_text_and_key_of_the_reference_example():
    receipt = interpret(ANNEX_B.encode(), (), DEFAULTS)
    assert receipt.log_text == f"SR ExampleProvider DELIVRD 000|MESSAGE={ANNEX_B}"
    assert receipt.log_key == "SR ExampleProvider DELIVRD 000|#MESSAGE#"
    assert receipt.fields["submit date"] == "1608011415"


def test_message_log_of_a_failure_and_of_missing_fields():
    receipt = interpret(receipt_text(stat="UNDELIV", err="034").encode(), (), DEFAULTS)
    assert receipt.log_key == "SR ExampleProvider UNDELIV 034|#MESSAGE#"
    receipt = interpret(b"id:5", (), DEFAULTS)
    assert receipt.log_text == "SR ExampleProvider - -|MESSAGE=id:5"
    assert receipt.log_key == "SR ExampleProvider - -|#MESSAGE#"


def test_absurdly_long_stat_is_cut_for_the_log_key():
    receipt = interpret(("id:1 stat:" + "X" * 5000).encode(), (), DEFAULTS)
    assert len(receipt.stat) == 64
    assert len(receipt.log_key) < 120


# --- decoding --------------------------------------------------------------------------------


def test_text_decoding_is_lenient():
    latin1 = "id:1 stat:DELIVRD Text:Ça coûte".encode("latin-1")
    receipt = interpret(latin1, (), DEFAULTS)
    assert receipt.text == "id:1 stat:DELIVRD Text:Ça coûte"
    utf8 = "id:1 stat:DELIVRD Text:Ça coûte 5€".encode()
    assert interpret(utf8, (), DEFAULTS).text.endswith("5€")
    receipt = interpret(bytearray(b"id:2 stat:DELIVRD"), (), DEFAULTS)
    assert receipt.provider_id == "2"
    assert interpret("id:3 stat:DELIVRD", (), DEFAULTS).provider_id == "3"  # a str is accepted


def test_nuls_never_reach_the_message_log():
    receipt = interpret(b"id:1 stat:DELIVRD Text:a\x00b\x00\x00", (), DEFAULTS)
    assert receipt.text == "id:1 stat:DELIVRD Text:a\ufffdb"
    assert "\x00" not in receipt.log_text


# --- synchronous errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x58, "SUBMIT ExampleProvider 0x00000058 ESME_RTHROTTLED"),
        (0x14, "SUBMIT ExampleProvider 0x00000014 ESME_RMSGQFUL"),
        (0x0B, "SUBMIT ExampleProvider 0x0000000B ESME_RINVDSTADR"),
        (0x45, "SUBMIT ExampleProvider 0x00000045 ESME_RSUBMITFAIL"),
        (0x400, "SUBMIT ExampleProvider 0x00000400"),  # vendor-specific: no name
        (0xFFFFFFFF, "SUBMIT ExampleProvider 0xFFFFFFFF"),
    ],
)
def test_submit_error_log(status, expected):
    assert submit_error_log("ExampleProvider", status) == (expected, expected)


def test_submit_error_log_takes_a_name_and_refuses_impossible_statuses():
    text, key = submit_error_log("P", 0x401, "VENDOR_BUSY")
    assert text == key == "SUBMIT P 0x00000401 VENDOR_BUSY"
    with pytest.raises(ValueError, match="32-bit"):
        submit_error_log("P", -1)
    with pytest.raises(ValueError, match="32-bit"):
        submit_error_log("P", 2**32)


# --- robustness ------------------------------------------------------------------------------

ANY_RULES = st.builds(
    ReceiptRules.build,
    st.just("P"),
    id_regex=st.sampled_from([DEFAULT_ID_REGEX, UUID_TLV_REGEX, WHOLE_TEXT, r"(\d+)"]),
    sr_id_format=st.sampled_from(list(IdFormat)),
    mt_ack_id_format=st.sampled_from(list(IdFormat)),
    id_in_optional_fields=st.booleans(),
    id_in_text_field=st.booleans(),
)
ANY_TLVS = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from([0x001E, 0x0423, 0x0424, 0x0427]),
            st.integers(min_value=0, max_value=0xFFFF),
        ),
        st.binary(max_size=40),
    ),
    max_size=6,
)
ANNEX_B_LIKE = st.builds(
    lambda parts: " ".join(parts).encode("latin-1"),
    st.lists(
        st.one_of(
            st.sampled_from(["id:", "stat:", "err:", "Text:", "submit date:", "0x001E:", " "]),
            st.text(st.characters(max_codepoint=0xFF), max_size=12),
        ),
        max_size=12,
    ),
)


@given(st.one_of(st.binary(max_size=300), ANNEX_B_LIKE), ANY_TLVS, ANY_RULES)
def test_interpret_never_raises(short_message, tlvs, rules):
    receipt = interpret(short_message, tlvs, rules)
    assert receipt.outcome is rules.classify(receipt.stat)
    assert (receipt.provider_id is None) == (receipt.id_source is IdSource.NONE)
    assert (receipt.provider_id is None) == (receipt.id_error is not None)
    assert receipt.log_text.startswith(receipt.log_key.removesuffix("#MESSAGE#") + "MESSAGE=")
    assert receipt.log_text.endswith(receipt.text)
    assert "\x00" not in receipt.log_text


@given(st.text(max_size=200), ANY_TLVS, ANY_RULES)
def test_interpret_never_raises_on_str(short_message, tlvs, rules):
    interpret(short_message, tlvs, rules)


def test_regex_objects_are_compiled_once_per_rules():
    rules = ReceiptRules.build("P")
    assert isinstance(rules.id_regex, re.Pattern)
    assert interpret(ANNEX_B.encode(), (), rules).provider_id == "1234567890"
    with pytest.raises(AttributeError):
        rules.smsc_name = "Q"  # type: ignore[misc]


def test_interpret_takes_the_tlvs_of_a_decoded_deliver_sm() -> None:
    """smsmta.smpp.codec types TLV values (str, int); interpret must read them as they come."""
    from smsmta.smpp.codec import decode, encode
    from smsmta.smpp.constants import Tag
    from smsmta.smpp.pdu import DeliverSm

    uuid = "3f2b8c1e-9a4d-4e55-b6a1-0c7d2e9f1a22"
    wire = encode(
        DeliverSm(
            esm_class=0x04,
            short_message=f"id:{uuid} sub:001 dlvrd:001 stat:UNDELIV err:001".encode(),
            tlvs=(
                (Tag.receipted_message_id, uuid),
                (Tag.message_state, 5),
                (Tag.network_error_code, b"\x03\x00\x07"),
            ),
        )
    )
    pdu = decode(wire)
    receipt = interpret(pdu.short_message, pdu.tlvs, ReceiptRules.build("P"))
    # the default regex refuses a 36-character id: the TLV gives it
    assert receipt.provider_id == uuid
    assert receipt.id_source is IdSource.RECEIPTED_MESSAGE_ID
    assert receipt.outcome is Outcome.FAILED
    no_text = interpret(b"", pdu.tlvs, ReceiptRules.build("P"))
    assert (no_text.stat, no_text.err) == ("UNDELIV", "007")  # message_state, network_error_code
    from_tlv = ReceiptRules.build(
        "P", id_regex=r"0x001E:([0-9a-f-]{36})", id_in_optional_fields=True
    )
    assert interpret(b"stat:DELIVRD", pdu.tlvs, from_tlv).provider_id == uuid
