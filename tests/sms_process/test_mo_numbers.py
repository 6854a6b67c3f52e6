"""The MO sender in the canonical form, TON/NPI and the account's default country
considered; one that cannot be is kept as received and logged masked."""

from __future__ import annotations

import pytest
import structlog

from sms_process.mo import address


@pytest.mark.parametrize(
    ("ton", "npi", "addr", "country", "stored"),
    [
        (1, 1, "33600000001", "", "+33600000001"),
        (0, 1, "33600000021", "", "+33600000021"),  # issue 13: TON 0 was stored as digits
        (0, 0, "33600000021", "FR", "+33600000021"),
        (2, 1, "612345678", "FR", "+33612345678"),
        (0, 1, "0612345678", "FR", "+33612345678"),
        (1, 1, "+447700900123", "", "+447700900123"),
        (2, 1, "0612345678", "", "0612345678"),  # no country: kept as received
        (5, 0, "MyBank", "", "MyBank"),  # alphanumeric: kept
    ],
)
def test_mo_sender_is_stored_canonical(
    ton: int, npi: int, addr: str, country: str, stored: str
) -> None:
    assert address(ton, addr, npi, country) == stored


def test_a_sender_that_cannot_be_canonical_is_logged_masked() -> None:
    with structlog.testing.capture_logs() as logs:
        assert address(2, "0612345678", 1, "") == "0612345678"
    (entry,) = logs
    assert entry["event"] == "sms_process.mo_sender_not_canonical"
    assert entry["sender"] == "********78"
    assert "0612345678" not in str(entry)
