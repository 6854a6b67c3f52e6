"""From a queued message to its submit_sm PDUs (SPEC sections 5 and 6).

`MtBuilder(account)` precomputes what depends only on the account; `build(...)` encodes
the text with the account's mapping and transliteration, splits it (UDH, or one
message_payload PDU), and fills each submit_sm from the account's channel settings and
the delivery's options:

- source_addr: the delivery's From, else the account's source number; with neither, none
  is sent (empty, TON/NPI 0: the provider puts its own; the short code is the preview's
  and the blacklist's, never the sender's). An address with letters goes with the
  account's alphanumeric TON/NPI (5/0 by default); one written `+<digits>` goes as its
  digits with TON international / NPI ISDN: a `+` never goes out, as for destinations;
- destination_addr: digits only, the `+` carried by TON/NPI, unless the account sends the
  full number as typed;
- registered_delivery on the first part only, or on every part when the SMS process
  decides over all parts (`multipart_status: all_parts`); never for auto-replies;
- validity_period as absolute UTC `YYMMDDhhmmss000+`; priority_flag; service_type;
- TLVs: dest_addr_subunit for a transmission mode, the account's service-id TLV with the
  delivery's value, message_payload in payload mode, and user_message_reference (the low
  16 bits of the broad_log id) so that a peer can count duplicates.

Raises smsmta.smpp.text.TextError (UnencodableText, TooManyParts) for a text that cannot go.
Pure: touches nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from smsmta.queue.enqueue import SendingOptions
from smsmta.settings import Account
from smsmta.smpp.constants import EsmClass, Npi, Tag, Ton
from smsmta.smpp.pdu import Pdu, SubmitSm
from smsmta.smpp.text import TextError, encode_message

TRANSMISSION_SUBUNIT = {"normal": 0, "flash": 1, "mobile_equipment": 2, "sim": 3}
_NOT_DIGITS = re.compile(r"\D+")
_LETTERS = re.compile(r"[A-Za-z]")
# C-Octet String fields a message fills, and their longest value (SMPP 3.4 section 5.2)
_FIELD_LIMITS = (("source_addr", 20), ("destination_addr", 20), ("service_type", 5))


class UnsendableMessage(TextError):
    """A field of the message cannot go into a submit_sm (too long, or not Latin-1)."""


def _check_fields(fields: dict[str, object]) -> None:
    for name, limit in _FIELD_LIMITS:
        value = fields[name]
        assert isinstance(value, str)
        if len(value) > limit:
            raise UnsendableMessage(
                f"{name} {value!r} is {len(value)} characters; SMPP allows at most {limit}"
            )
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as error:
            raise UnsendableMessage(
                f"{name} {value!r}: {value[error.start]!r} is not one octet (Latin-1)"
            ) from None


@dataclass(frozen=True)
class _DeliveryId:
    id: int


@dataclass(frozen=True)
class DeliveryOptions(SendingOptions, _DeliveryId):
    """One delivery as the MTA caches it: its id, its sending options (SPEC section 6),
    when it was created (the default validity counts from then) and whether its messages
    ask for receipts. Fields in that order, the order of smsmta.queue.claims's rows."""

    created_at: datetime | None = None
    registered_delivery: bool = True


def validity_period(moment: datetime) -> str:
    """SMPP absolute time in UTC: YYMMDDhhmmss, tenths, quarter-hours offset, '+'."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%y%m%d%H%M%S") + "000+"


class MtBuilder:
    """Builds the submit_sm PDUs of one account's messages."""

    def __init__(self, account: Account, *, receipt_on_every_part: bool = False) -> None:
        channel, smsc = account.channel, account.smsc
        self.mapping = tuple((rule.data_coding, rule.encoding) for rule in smsc.encoding_mapping)
        self.transliterate = channel.transliteration
        self.message_payload = smsc.message_payload
        self.full_number = smsc.send_full_phone_number
        self.default_source = channel.source_number
        self.source_ton, self.source_npi = channel.source_ton, channel.source_npi
        self.alphanumeric = (channel.alphanumeric_ton, channel.alphanumeric_npi)
        self.every_part = receipt_on_every_part
        self.dest_ton, self.dest_npi = channel.dest_ton, channel.dest_npi
        self.service_type = channel.service_type
        self.service_id_tag = smsc.service_id_tlv_tag

    def destination(self, address: str) -> str:
        return address if self.full_number else _NOT_DIGITS.sub("", address)

    def source(self, from_: str | None) -> tuple[str, int, int]:
        """source_addr with its TON/NPI, for a delivery's From (None: the account's)."""
        source = from_ or self.default_source
        if not source:
            return "", 0, 0  # none: the provider substitutes its own
        if _LETTERS.search(source):
            return (source, *self.alphanumeric)
        if source.startswith("+"):
            return source[1:], Ton.INTERNATIONAL, Npi.ISDN
        return source, self.source_ton, self.source_npi

    def build(
        self, broad_log_id: int, address: str, text: str, options: DeliveryOptions
    ) -> tuple[Pdu, ...]:
        encoded = encode_message(
            text,
            self.mapping,
            transliterate=self.transliterate,
            message_payload=self.message_payload,
            max_parts=options.max_parts if not self.message_payload else 255,
            reference=broad_log_id & 0xFF,
        )
        source, source_ton, source_npi = self.source(options.source_addr)
        tlvs: list[tuple[int, object]] = [(Tag.user_message_reference, broad_log_id & 0xFFFF)]
        if options.transmission_mode is not None:
            tlvs.append((Tag.dest_addr_subunit, TRANSMISSION_SUBUNIT[options.transmission_mode]))
        if self.service_id_tag is not None and options.service_id:
            tlvs.append((self.service_id_tag, options.service_id.encode("latin-1", "replace")))
        common = {
            "service_type": options.service_type or self.service_type,
            "source_addr_ton": source_ton,
            "source_addr_npi": source_npi,
            "source_addr": source,
            "dest_addr_ton": self.dest_ton,
            "dest_addr_npi": self.dest_npi,
            "destination_addr": self.destination(address),
            "priority_flag": options.priority,
            "validity_period": validity_period(options.validity_end)
            if options.validity_end
            else "",
            "data_coding": encoded.data_coding,
        }
        _check_fields(common)
        registered = 1 if options.registered_delivery else 0
        if encoded.payload is not None:
            payload_tlvs = (*tlvs, (Tag.message_payload, encoded.payload))
            return (SubmitSm(**common, registered_delivery=registered, tlvs=payload_tlvs),)
        esm_class = EsmClass.UDHI if encoded.udh else 0
        return tuple(
            SubmitSm(
                **common,
                esm_class=esm_class,
                registered_delivery=registered if index == 0 or self.every_part else 0,
                short_message=part,
                tlvs=tuple(tlvs),
            )
            for index, part in enumerate(encoded.parts)
        )
