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
        ("06.12.34.56.78", "0612345678"),
        ("(061) 234-5678", "0612345678"),
        ("+1234567890123456", None),  # 16 digits: longer than E.164
        ("06 12", None),
        ("+33 6 12 AB", None),
        ("", None),
    ],
)
def test_numbers_are_cleaned_then_checked(raw: str, number: str | None) -> None:
    assert normalize_number(raw) == number


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
        "row 3: invalid mobile number 'not a number' (6 to 15 digits, '+' allowed)",
        "row 5: mobile number +33611111111 repeats row 2",
        "row 8: 4 fields, the header has 3",
        "row 9: no mobile number (6 to 15 digits, '+' allowed)",
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
