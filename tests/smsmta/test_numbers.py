"""smsmta.numbers: the canonical subscriber number, the blacklist scope, and their cost."""

from __future__ import annotations

import time

import pytest

from smsmta.numbers import (
    NumberError,
    blacklist_scope,
    canonical,
    check_country,
    is_canonical,
    sender_key,
)

# (written form, ton, npi, default country, canonical form)
FORMS = [
    ("+33600000001", None, None, "", "+33600000001"),
    ("33600000001", None, None, "", "+33600000001"),  # issue 13: stored + vs queued digits
    ("33600000021", 0, 0, "", "+33600000021"),  # issue 13: a STOP with TON 0
    ("33600000021", 0, 0, "FR", "+33600000021"),  # the country code wins over national
    ("33600000021", 1, 1, "", "+33600000021"),
    ("+33600000021", 1, 1, "", "+33600000021"),  # a '+' with TON 1 from a careless SMSC
    ("600000021", 2, 1, "FR", "+33600000021"),  # TON national
    ("0612345678", None, None, "FR", "+33612345678"),
    ("06 12 34 56 78", None, None, "fr", "+33612345678"),
    ("612345678", None, None, "FR", "+33612345678"),
    ("0033 6.12.34.56.78", None, None, "", "+33612345678"),
    ("+33 (0)6 12 34 56 78", None, None, "", "+33612345678"),
    ("+330612345678", None, None, "", "+33612345678"),  # trunk 0 after the country code
    ("2025550123", None, None, "US", "+12025550123"),
    ("12025550123", None, None, "US", "+12025550123"),
    ("447700900123", 0, 0, "FR", "+447700900123"),  # not French: read as international
    ("+390612345678", None, None, "", "+390612345678"),  # Italy keeps its leading 0
    ("07700 900123", None, None, "GB", "+447700900123"),
]

REFUSED = [
    ("0612345678", None, None, "", "default_country"),  # national without a country
    ("600000021", 2, 1, "", "default_country"),
    ("12345", None, None, "", "international"),
    ("+999123456", None, None, "", "international"),  # no such country code
    ("06123", None, None, "FR", "national number of FR"),
    ("abc", None, None, "FR", "only digits"),
    ("", None, None, "FR", "no digits"),
    ("+", None, None, "", "no digits"),
    ("33600000021", 5, 0, "", "alphanumeric"),
    ("33600000021", 1, 9, "", "NPI"),
    ("1" * 20, None, None, "", "at most 15"),
]


@pytest.mark.parametrize(("written", "ton", "npi", "country", "expected"), FORMS)
def test_canonical_forms(
    written: str, ton: int | None, npi: int | None, country: str, expected: str
) -> None:
    assert canonical(written, ton=ton, npi=npi, default_country=country) == expected
    # the canonical form is a fixed point, whatever the country
    assert canonical(expected) == expected
    assert canonical(expected, ton=1, npi=1, default_country="DE") == expected
    assert is_canonical(expected)


@pytest.mark.parametrize(("written", "ton", "npi", "country", "why"), REFUSED)
def test_refused_forms_say_why(
    written: str, ton: int | None, npi: int | None, country: str, why: str
) -> None:
    with pytest.raises(NumberError, match=why):
        canonical(written, ton=ton, npi=npi, default_country=country)


def test_country_check() -> None:
    assert check_country("fr") == "FR"
    assert check_country("") == ""
    with pytest.raises(ValueError, match="ISO 3166"):
        check_country("FRA")
    with pytest.raises(ValueError, match="ISO 3166"):
        check_country("ZZ")


def test_sender_keys() -> None:
    assert sender_key("38000") == "38000"
    assert sender_key("+38000") == "38000"  # a short code is never E.164
    assert sender_key("12345678") == "12345678"
    assert sender_key("33612345678") == "+33612345678"  # a long number: canonical
    assert sender_key("+33 6 12 34 56 78") == "+33612345678"
    assert sender_key("0612345678", default_country="FR") == "+33612345678"
    assert sender_key("MyBrand") == "MyBrand"
    assert sender_key("33612345678", ton=5) == "33612345678"
    assert sender_key("") == ""


def test_blacklist_scope_rule() -> None:
    # numeric From: its own short code or number
    assert blacklist_scope("38001", "", "38000") == "38001"
    assert blacklist_scope("33612345678", "38000", "38000") == "+33612345678"
    # no From: the account's numeric source number, else its short code
    assert blacklist_scope(None, "38002", "38000") == "38002"
    assert blacklist_scope("", "", "38000") == "38000"
    # an alphanumeric sender cannot be answered: the account's short code
    assert blacklist_scope("MyBrand", "38002", "38000") == "38000"
    assert blacklist_scope(None, "MyBrand", "38000") == "38000"
    assert blacklist_scope("MyBrand", "", "") == ""


def test_canonical_cost() -> None:
    """The push validates every recipient: print the rate, keep it well above 10,000/s."""
    ready = [f"+3361{i:07d}" for i in range(20_000)]
    national = [f"061{i:07d}" for i in range(5_000)]
    started = time.perf_counter()
    for number in ready:
        canonical(number)
    fast = len(ready) / (time.perf_counter() - started)
    started = time.perf_counter()
    for number in national:
        canonical(number, default_country="FR")
    slow = len(national) / (time.perf_counter() - started)
    print(f"canonical(): {fast:,.0f}/s already canonical, {slow:,.0f}/s national (FR)")
    assert fast > 20_000
    assert slow > 5_000
