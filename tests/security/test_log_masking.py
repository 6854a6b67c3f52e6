"""The log's last line of defence: secrets masked by key, and URL passwords in any text;
phone numbers and message texts masked unless logging.show_personal_data is on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from smsmta import obs
from smsmta.obs import MASK, redact_secrets
from smsmta.smpp.aio import traced
from smsmta.smpp.pdu import SubmitSm


@pytest.mark.parametrize(
    ("event", "hidden"),
    [
        ({"password": "pw-1"}, "pw-1"),
        ({"settings": {"connection": {"password": "pw-2"}}}, "pw-2"),
        ({"headers": {"Authorization": "Basic b3BzOnB3"}}, "b3BzOnB3"),
        ({"error": "connection to postgresql://smsmta:Db-Pw3@db/x failed"}, "Db-Pw3"),
        ({"url": "postgresql+psycopg://u:p%40ss@127.0.0.1:5432/db"}, "p%40ss"),
        ({"urls": ["https://ops:Op-Pw4@mid.example/api"]}, "Op-Pw4"),
    ],
)
def test_secrets_never_pass_the_processor(event: dict[str, Any], hidden: str) -> None:
    masked = redact_secrets(None, "info", dict(event))
    assert hidden not in repr(masked)
    assert MASK in repr(masked)


def test_urls_without_credentials_and_plain_text_are_kept() -> None:
    event = {"url": "https://mid.example:8443/api/v1", "text": "a:b@c is not a URL", "n": 3}
    assert redact_secrets(None, "info", dict(event)) == event


# --- personal data (issue 14, item 8): numbers and texts masked unless asked for ---------


@pytest.fixture
def personal_data_shown() -> Iterator[None]:
    obs.show_personal_data(True)
    try:
        yield
    finally:
        obs.show_personal_data(False)


def test_numbers_and_texts_are_masked_by_default() -> None:
    assert obs.mask_number("+33612345678") == "+336******78"
    assert obs.mask_number("0612345678") == "********78"  # national: the last 2 only
    assert obs.mask_number("38000") == "***00"
    assert obs.mask_text("Black Friday: -50% for Alice") == "<28 characters>"
    entry = "SR Sim UNDELIV 001|MESSAGE=id:7 stat:UNDELIV err:001 text:Hello Alice, your"
    assert obs.mask_receipt_text(entry) == (
        "SR Sim UNDELIV 001|MESSAGE=id:7 stat:UNDELIV err:001 text:<17 characters>"
    )
    assert obs.mask_receipt_text("SUBMIT Sim 0x00000045") == "SUBMIT Sim 0x00000045"


def test_show_personal_data_lets_them_through(personal_data_shown: None) -> None:
    assert obs.mask_number("+33612345678") == "+33612345678"
    assert obs.mask_text("Hello") == "Hello"
    assert obs.mask_receipt_text("id:7 Text:Hello") == "id:7 Text:Hello"


def test_the_verbose_smpp_trace_masks_numbers_and_texts_unless_asked() -> None:
    pdu = SubmitSm(
        source_addr="38000",
        destination_addr="33612345678",
        short_message=b"Black Friday for Alice",
        tlvs=((0x0424, b"the same text, as a payload"),),
    )
    shown = repr(traced(pdu))
    for personal in ("33612345678", "Black Friday", "the same text"):
        assert personal not in shown
    assert "*********78" in shown and "<22 octets>" in shown and "<27 octets>" in shown
    assert "33612345678" in repr(traced(pdu, personal=True))
