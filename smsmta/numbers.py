"""Subscriber numbers in one canonical form (E.164), and the form of a blacklist's short code.

A STOP and a later MT to the same handset must meet whatever way each was written, so every
entry (the mid API push, the marketing CSV import, the MO sender, the blacklist command)
turns a number into `+<E.164 digits>` with `canonical()`, stores that, and compares only
that. The rules, in order:

- spaces, dots, dashes, slashes and parentheses are dropped; a leading `00` is the
  international call prefix (`0033 6...` is `+33 6...`);
- TON 5 (alphanumeric) is never a subscriber number; an NPI other than unknown (0),
  ISDN/E.164 (1) or national (8) is not E.164 and is refused;
- a `+`, a `00` or TON 1 (international) means the digits are the full international
  number;
- TON 2 (national), or digits starting with the trunk prefix `0`, are a national number:
  read with the account's `default_country`, refused when it has none;
- other digits (TON 0 unknown, or no TON: typed input): with a default country, digits
  starting with its country code that make a possible number are international
  (`33600000021` -> `+33600000021` under FR), else a possible national number of that
  country (`612345678` -> `+33612345678` under FR), else international; without a default
  country they are international (`33600000021` -> `+33600000021`).
A number must be *possible* (a known country code, a length that country uses), not
*valid*: the validity tables lag behind newly opened ranges, and refusing a customer's
real number is worse than queueing a number the SMSC then rejects.

Short codes (the MO's destination, a numeric From) are not subscriber numbers: a
blacklist is scoped by `sender_key()` of the short code or number a message is sent
from, which a STOP reaches: up to 8 digits are a short code, kept as its digits without
`+`; a longer number is canonicalised like a subscriber number (a long-number From and an
MO to it meet); an alphanumeric sender is kept as written. `blacklist_scope()` says which
key applies to a delivery: its numeric From, else the account's numeric source number,
else (no From, or an alphanumeric one, which a phone cannot answer) the account's short
code.

The library `phonenumbers` (libphonenumber's metadata) does the country work. A fast path
takes an already canonical `+<digits>` without parsing (about 4x faster; see
tests/smsmta/test_numbers.py for the figure). Pure functions: touches nothing.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberFormat

TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_ALPHANUMERIC = 5
NPI_ACCEPTED = (0, 1, 8)  # unknown, ISDN (E.164), national
SHORT_CODE_MAX_DIGITS = 8

_SEPARATORS = re.compile(r"[\s.\-/()]")
_FAST = re.compile(r"^\+([1-9][0-9]{5,14})$")
_DIGITS = re.compile(r"^[0-9]+$")
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


class NumberError(ValueError):
    """A number that cannot be put in the canonical form; the message says why (without
    the number, so it can be logged)."""


def mask(number: str) -> str:
    """A number for a log line: all but its last two characters hidden."""
    return "*" * max(0, len(number) - 2) + number[-2:]


def check_country(value: str) -> str:
    """An ISO 3166 alpha-2 code libphonenumber knows, upper-cased ('' stays '')."""
    if value == "":
        return ""
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{value!r} is not an ISO 3166 alpha-2 country code with a numbering plan "
            "(for example FR, GB, US); leave it empty to refuse national numbers"
        )
    return code


def _fast(digits: str) -> str | None:
    """`+digits` when the digits are plainly a possible international number, else None
    (the slow path then decides, e.g. strips a trunk 0 written after the country code)."""
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in _COUNTRY_CODES:
            rest = digits[size:]
            if not rest or rest[0] == "0":
                return None
            number = PhoneNumber(country_code=code, national_number=int(rest))
            return "+" + digits if phonenumbers.is_possible_number(number) else None
    return None


def _format(number: PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _international(digits: str) -> str | None:
    fast = _fast(digits) if digits[:1] != "0" else None
    if fast is not None:
        return fast
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    return _format(number) if phonenumbers.is_possible_number(number) else None


def _national(digits: str, country: str) -> str | None:
    try:
        number = phonenumbers.parse(digits, country)
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != phonenumbers.country_code_for_region(country):
        return None
    return _format(number) if phonenumbers.is_possible_number(number) else None


def canonical(
    number: str,
    *,
    ton: int | None = None,
    npi: int | None = None,
    default_country: str = "",
) -> str:
    """`number` as `+<E.164 digits>`; NumberError when it cannot be (see the module rules).

    `ton`/`npi` are the SMPP type of number and numbering plan when the number came over
    SMPP; None for typed input (API, CSV, command line).
    """
    if ton in (None, TON_UNKNOWN, TON_INTERNATIONAL) and npi in (None, 0, 1):
        match = _FAST.match(number)
        if match is not None:
            fast = _fast(match.group(1))
            if fast is not None:
                return fast
    if ton == TON_ALPHANUMERIC:
        raise NumberError("an alphanumeric address (TON 5) is not a subscriber number")
    if npi is not None and npi not in NPI_ACCEPTED:
        raise NumberError(f"numbering plan (NPI) {npi} is not E.164")
    cleaned = _SEPARATORS.sub("", number)
    plus = cleaned.startswith("+")
    digits = cleaned[1:] if plus else cleaned
    if not digits:
        raise NumberError("no digits")
    if not _DIGITS.match(digits):
        raise NumberError("a phone number has only digits, after an optional '+'")
    if len(digits) > 17:
        raise NumberError(f"{len(digits)} digits: E.164 numbers have at most 15")
    country = default_country.upper()
    international = plus or ton == TON_INTERNATIONAL
    if not plus and digits.startswith("00"):
        digits, international = digits[2:], True
    if international:
        result = _international(digits)
        if result is None:
            raise NumberError("not a possible international number (country code and length)")
        return result
    if ton == TON_NATIONAL or digits.startswith("0"):
        if not country:
            raise NumberError(
                "a national number (TON 2 or a leading 0) needs the account's default_country"
            )
        result = _national(digits, country)
        if result is None:
            raise NumberError(f"not a possible national number of {country}")
        return result
    if country:
        if digits.startswith(str(phonenumbers.country_code_for_region(country))):
            result = _international(digits)
            if result is not None:
                return result
        result = _national(digits, country)
        if result is not None:
            return result
    result = _international(digits)
    if result is None:
        raise NumberError(
            "not a possible international number (country code and length)"
            + ("" if country else "; with no default_country a national number is refused")
        )
    return result


def is_canonical(number: str) -> bool:
    """True when `number` is already in the canonical form."""
    try:
        return canonical(number) == number
    except NumberError:
        return False


def is_alphanumeric(sender: str) -> bool:
    """A sender that is not a number (a brand name): a phone cannot reply to it."""
    return _DIGITS.match(_SEPARATORS.sub("", sender).lstrip("+")) is None


@lru_cache(maxsize=4096)
def sender_key(
    sender: str, *, ton: int | None = None, npi: int | None = None, default_country: str = ""
) -> str:
    """The form of a short code or sending number as a blacklist's scope.

    Up to SHORT_CODE_MAX_DIGITS digits (a `+` dropped): a short code, its digits. A longer
    number: its canonical form when it has one, else its digits. Alphanumeric: as written.
    """
    cleaned = _SEPARATORS.sub("", sender)
    if cleaned == "":
        return ""
    if ton == TON_ALPHANUMERIC or is_alphanumeric(cleaned):
        return sender.strip()
    digits = cleaned.lstrip("+")
    if len(digits) <= SHORT_CODE_MAX_DIGITS:
        return digits
    try:
        return canonical(cleaned, ton=ton, npi=npi, default_country=default_country)
    except NumberError:
        return digits


def blacklist_scope(
    source_addr: str | None, source_number: str, short_code: str, default_country: str = ""
) -> str:
    """The blacklist scope (a `sender_key`) of a message sent with this From.

    The short code or number the message goes out from is what a STOP reaches: the
    delivery's From when numeric, else the account's source number when numeric. An
    alphanumeric sender (or none: the provider puts its own) cannot be answered, so a STOP
    reached the account's short code: that short code's blacklist applies.
    """
    sender = source_addr or source_number
    if sender and not is_alphanumeric(sender.strip()):
        return sender_key(sender, default_country=default_country)
    return sender_key(short_code, default_country=default_country) if short_code else ""
