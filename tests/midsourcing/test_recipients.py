"""CSV recipients: numbers, rendering, and rejected rows named by their line number."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midsourcing.recipients import CsvError, normalize_number, parse_csv, render, text_fields


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("06.12.34.56.78", None),  # national: refused without a default country
        ("33 6 12 34 56 78", "+33612345678"),
        ("+1234567890123456", None),  # 16 digits: longer than E.164
        ("06 12", None),
        ("+33 6 12 AB", None),
        ("", None),
    ],
)
def test_numbers_are_cleaned_then_checked(raw: str, number: str | None) -> None:
    assert normalize_number(raw) == number


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("06.12.34.56.78", "+33612345678"),
        ("(061) 234-5678", "+33612345678"),
        ("612345678", "+33612345678"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0044 7700 900123", "+447700900123"),
        ("06 12", None),
    ],
)
def test_national_numbers_are_read_with_the_default_country(raw: str, number: str | None) -> None:
    assert normalize_number(raw, "FR") == number


def test_one_handset_written_two_ways_is_one_recipient() -> None:
    content = "mobile,first_name\n06 12 34 56 78,Ada\n+33612345678,Again\n0612345679,Bob\n"
    result = parse_csv(content, "Hi {first_name}", default_country="FR")
    assert [(row.line, row.mobile) for row in result.rows] == [
        (2, "+33612345678"),
        (4, "+33612345679"),
    ]
    assert [str(r) for r in result.rejected] == ["row 3: mobile number +33612345678 repeats row 2"]
    refused = parse_csv(content, "Hi {first_name}")  # no default country: national refused
    assert [row.mobile for row in refused.rows] == ["+33612345678"]
    assert "default_country" in str(refused.rejected[0])


def test_invalid_rows_are_rejected_with_their_line_number_and_the_rest_kept() -> None:
    content = (
        "Mobile;first_name;city\n"
        "+33 6 11 11 11 11;Ada;Paris\n"
        "not a number;Bob;Lyon\n"
        "\n"
        "+33611111111;Again;Nice\n"
        '"+33622222222";"Multi\nline";Lille\n'
        "+33633333333;Extra;Nantes;oops\n"
        ";NoNumber;Brest\n"
        "+33644444444;Dan\n"
    )
    result = parse_csv(content, "Hi {first_name} from {city}!")
    assert [(row.line, row.mobile, row.text) for row in result.rows] == [
        (2, "+33611111111", "Hi Ada from Paris!"),
        (7, "+33622222222", "Hi Multi\nline from Lille!"),  # a record may span lines
        (10, "+33644444444", "Hi Dan from !"),
    ]
    assert [str(r) for r in result.rejected] == [
        "row 3: invalid mobile number 'not a number': a phone number has only digits, "
        "after an optional '+'",
        "row 5: mobile number +33611111111 repeats row 2",
        "row 8: 4 fields, the header has 3",
        "row 9: no mobile number",
    ]
    assert result.mobile_column == "Mobile"


def test_a_text_naming_a_missing_column_is_refused_whole() -> None:
    with pytest.raises(CsvError, match=r"\{loyalty\}.*no such column"):
        parse_csv("mobile,first_name\n+33611111111,Ada\n", "Hi {first_name}, {loyalty} pts")


@pytest.mark.parametrize("text", ["{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{0}", "{", "}"])
def test_placeholders_are_plain_column_names(text: str) -> None:
    with pytest.raises(CsvError):
        text_fields(text)


def test_a_file_without_a_mobile_column_is_refused() -> None:
    with pytest.raises(CsvError, match="no mobile number column"):
        parse_csv("name,email\nAda,a@example.com\n", "Hi")


def test_braces_can_be_written_literally() -> None:
    assert render("{{x}} {name}", {"name": "Ada"}) == "{x} Ada"


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=20)))
def test_rendering_puts_each_value_in_its_place(fields: dict[str, str]) -> None:
    text = "|".join("{" + name + "}" for name in fields)
    assert render(text, fields) == "|".join(fields.values())
    assert text_fields(text) == list(fields)
