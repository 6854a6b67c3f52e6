"""The mid HTTP API's documents: every request and response body, as pydantic models.

Shared by the server (midsourcing.api validates requests with them and publishes them in
its OpenAPI document) and the client (midsourcing.client builds requests with them), so
the two cannot drift. Every constraint of SPEC section 6 is here: From at most 20
characters (SMPP's source_addr is 21 octets with its NUL; the template setting, the
preview and the MTA's submit_sm builder agree), 1..255 SMS per message, the four
transmission modes, priority 0..3, service_type at most 5 characters. What the database
or a later answer would fail on is refused here with a 422 naming the field (issue 14): a
`validity_end` offset beyond +/-14:00 or past 2099 once in UTC (it is stored in UTC), a
control character or lone surrogate in `label` or `service_id`, a lone surrogate in a text.

A recipient's `to` is only checked here for its length (at most 32 characters): whether
it is a phone number depends on the account's default country, so the push puts each
one in the canonical form (smsmta.numbers) and refuses the rows that cannot be, alone,
keeping the rest of the chunk. Touches nothing.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from smsmta.settings import TransmissionMode

MAX_CHUNK = 10_000
"""Recipients per push chunk."""
MAX_TEXT = 39_015
"""Characters of one message: 255 concatenated GSM7 parts of 153 (the protocol ceiling)."""
MAX_PREVIEW_TEXTS = 20
MAX_PREVIEW_DETAIL = 100
"""Characters listed one by one in a preview answer (transliterated): the answer stays
about twice the request, not thirty times (a 1.6 MB request once answered 50 MB)."""
MAX_FROM = 20
"""Characters of a From (source_addr): SMPP 3.4's 21 octets less the terminating NUL."""
MAX_ADDRESS = 32
"""Characters of a recipient number as written (spaces, dots, a '+' or '00' allowed)."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("the text contains a NUL character")
    _no_surrogate(value)
    if not value.strip():
        raise ValueError("the text is empty")
    return value


def _no_surrogate(value: str) -> None:
    for index, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            raise ValueError(f"a lone UTF-16 surrogate at character {index}")


def _no_control(value: str) -> str:
    """Refuse control characters (NUL, newline, escape...) and lone surrogates: the
    database refuses NUL and surrogates (a 500 before issue 14) and a label or TLV value
    has no use for line breaks."""
    for index, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"control character U+{ord(char):04X} at character {index}")
    return value


MAX_UTC_OFFSET = timedelta(hours=14)
"""Farthest time-zone offset accepted (the world's are -12:00 to +14:00)."""

Label = Annotated[str, Field(max_length=255), AfterValidator(_no_control)]

# only a length here: the push canonicalises each number with the account's default
# country and refuses, alone, a row whose number cannot be (smsmta.numbers)
Address = Annotated[str, Field(min_length=1, max_length=MAX_ADDRESS)]
MessageText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_text)]
InternalName = Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeliveryState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NO_RECEIPT = "no_receipt"  # acknowledged, no receipt by the end of the validity period


class SmsOptions(_Document):
    """The SMS options of a delivery (SPEC section 6)."""

    source_addr: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_FROM,
        description="From (at most 20 characters); absent: the account's number",
    )
    max_parts: int = Field(5, ge=1, le=255, description="max SMS per message")
    transmission_mode: TransmissionMode | None = None
    validity_end: datetime | None = Field(
        None, description="absolute end of validity (UTC); absent: the MTA's default"
    )
    priority: int = Field(0, ge=0, le=3, description="priority_flag")
    service_type: str | None = Field(None, max_length=5)
    service_id: str | None = Field(None, max_length=255, description="service-id TLV value")

    @field_validator("validity_end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        offset = value.utcoffset()
        if offset is None:
            raise ValueError("give a time zone (UTC: a trailing 'Z')")
        if abs(offset) > MAX_UTC_OFFSET:
            raise ValueError("the time-zone offset is beyond +/-14:00")
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range once in UTC") from None
        # checked in UTC: what is stored, and read back on every later answer
        if utc.year > 2099:
            raise ValueError("the SMPP validity period ends in 2099 (UTC)")
        return utc

    @field_validator("service_id")
    @classmethod
    def _service_id(cls, value: str | None) -> str | None:
        return _no_control(value) if value is not None else None

    @field_validator("source_addr", "service_type")
    @classmethod
    def _printable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and (not value.isprintable() or not value.isascii()):
            what = "From" if info.field_name == "source_addr" else info.field_name
            raise ValueError(f"{what} must be printable ASCII")
        return value


# --- authentication and connection ------------------------------------------------------


class TokenResponse(_Document):
    token: str
    token_type: str = "bearer"
    expires_at: datetime


class OperatorInfo(_Document):
    login: str
    label: str
    rights: list[str]


class RoutableAccount(_Document):
    name: str = Field(description="mid account internal name: <operator>_<marketing account>")
    marketing_account: str
    label: str


class ConnectionResponse(_Document):
    """What a test connection proves: who we are and where we may route."""

    operator: OperatorInfo
    accounts: list[RoutableAccount]
    server_time: datetime


# --- deliveries -----------------------------------------------------------------------------


class DeliveryCreate(_Document):
    marketing_account: InternalName = Field(
        description="the marketing external account's internal name"
    )
    marketing_delivery_id: InternalName = Field(description="the delivery's id on marketing side")
    label: Label = ""
    options: SmsOptions = SmsOptions()


class Counters(_Document):
    """A delivery's messages by status; `failed_hard`/`failed_soft` split `failed`."""

    total: int
    pending: int
    sending: int
    sent: int
    delivered: int
    failed_hard: int
    failed_soft: int
    cancelled: int
    no_receipt: int = Field(
        0, description="acknowledged by the SMSC, no receipt by the end of the validity period"
    )

    @property
    def processed(self) -> int:
        return (
            self.delivered + self.failed_hard + self.failed_soft + self.cancelled + self.no_receipt
        )


class DeliveryInfo(_Document):
    id: int
    account: str
    marketing_delivery_id: str
    label: str
    state: DeliveryState
    options: SmsOptions
    push_complete: bool
    counters: Counters


class Message(_Document):
    id: int = Field(ge=1, le=2**63 - 1, description="the marketing message id (idempotency key)")
    to: Address
    text: MessageText


class Chunk(_Document):
    messages: list[Message] = Field(min_length=1, max_length=MAX_CHUNK)

    @field_validator("messages")
    @classmethod
    def _unique_ids(cls, messages: list[Message]) -> list[Message]:
        seen: dict[int, int] = {}
        for index, message in enumerate(messages):
            first = seen.setdefault(message.id, index)
            if first != index:
                raise ValueError(
                    f"messages[{index}]: id {message.id} is also the id of messages[{first}]"
                )
        return messages


class ChunkResult(_Document):
    received: int
    inserted: int
    duplicates: int = Field(description="messages already in the queue from an earlier push")
    total: int = Field(description="messages of the delivery in the queue now")


class PushComplete(_Document):
    total: int = Field(ge=0, description="how many messages the marketing side pushed in all")


class StatusChange(_Document):
    id: int = Field(description="the marketing message id")
    status: MessageStatus
    failure_type: str | None
    failure_reason: str | None
    changed_at: datetime


class StatusPage(_Document):
    delivery_id: int
    state: DeliveryState
    changes: list[StatusChange]
    cursor: str = Field(description="pass it back to get the changes after this page")
    more: bool = Field(description="more changes are ready now: pull again at once")
    lag_seconds: float = Field(description="age of the oldest change not returned yet")
    counters: Counters


# --- preview ----------------------------------------------------------------------------------


class PreviewRequest(_Document):
    marketing_account: InternalName
    options: SmsOptions = SmsOptions()
    texts: list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(
        min_length=1, max_length=MAX_PREVIEW_TEXTS, description="rendered texts to preview"
    )


class PreviewCharacter(_Document):
    index: int = Field(description="0-based position in the text")
    char: str
    replacement: str | None = Field(None, description="what is sent instead (transliterated)")
    encoding: str | None = Field(None, description="the encoding that could not take it")


class PreviewText(_Document):
    text: str
    sent_text: str | None = Field(description="the text as the phone gets it")
    ok: bool
    error: str | None = None
    encoding: str | None = None
    data_coding: int | None = None
    characters: int = Field(description="characters of the text")
    units: int | None = Field(None, description="septets, octets or UTF-16 units")
    part_capacity: int | None = None
    parts: int | None = None
    part_ends: list[int] = Field(default_factory=list)
    max_parts: int
    within_max_parts: bool
    transliterated: list[PreviewCharacter] = Field(
        default_factory=list,
        description=f"the first {MAX_PREVIEW_DETAIL} characters transliterated (all: "
        "transliterated_count)",
    )
    transliterated_count: int = Field(0, description="characters transliterated in all")
    forced_by: PreviewCharacter | None = Field(
        None, description="the character that made a wider encoding necessary"
    )
    message_payload: bool = False


class PreviewResponse(_Document):
    account: str
    sender: str = Field(description="what the phone shows as sender")
    sender_origin: str = Field(description="from, source_number or short_code")
    encoding_mapping: list[str]
    transliteration: bool
    previews: list[PreviewText]


class Problem(_Document):
    """Every error answer: a code, a sentence, and where it applies."""

    error: str
    message: str
    errors: list[dict[str, object]] = Field(default_factory=list)
    chunk: ChunkResult | None = Field(
        None,
        description="a push whose rows were refused (error 'rejected_numbers'): what the "
        "rest of the chunk did; those rows are queued",
    )
