"""What the phone will get: a message previewed with a mid account's own settings.

`preview()` encodes each text exactly as the MTA will (smsmta.smpp.text.encode_message with the
account's encoding mapping, transliteration and message_payload settings, see
mta.submit.MtBuilder) and reports the encoding and data_coding chosen, the characters
transliterated and the one that forced a wider encoding, the parts and where each ends in
the text, whether the delivery's max SMS per message is kept, and the sender the phone
shows (From, else the account's source number, else its short code). A From over 20
characters never gets here: SmsOptions refuses it (422), as the template settings do and
as the MTA's submit_sm builder would, so a preview that passes is a From that sends. The
parts are counted against the protocol ceiling (255) so that a text over the delivery's
limit still shows how many it would need. The answer is bounded: at most
MAX_PREVIEW_DETAIL transliterated characters are listed one by one (the count says how
many in all), so it stays about twice the request. Touches nothing.
"""

from __future__ import annotations

from midsourcing.schemas import (
    MAX_PREVIEW_DETAIL,
    PreviewCharacter,
    PreviewResponse,
    PreviewText,
    SmsOptions,
)
from smsmta.settings import Account
from smsmta.smpp.text import MAX_PARTS, TextError, UnencodableText, encode_message


def sender(account: Account, options: SmsOptions) -> tuple[str, str]:
    """The source_addr the MTA will use and where it comes from."""
    if options.source_addr:
        return options.source_addr, "from"
    if account.channel.source_number:
        return account.channel.source_number, "source_number"
    return account.channel.short_code, "short_code"


def preview_text(account: Account, options: SmsOptions, text: str) -> PreviewText:
    mapping = [(rule.data_coding, rule.encoding) for rule in account.smsc.encoding_mapping]
    payload = account.smsc.message_payload
    try:
        encoded = encode_message(
            text,
            mapping,
            transliterate=account.channel.transliteration,
            message_payload=payload,
            max_parts=MAX_PARTS,
        )
    except UnencodableText as exc:
        return PreviewText(
            text=text,
            sent_text=None,
            ok=False,
            error=str(exc),
            characters=len(text),
            max_parts=options.max_parts,
            within_max_parts=False,
            forced_by=PreviewCharacter(index=exc.index, char=exc.char),
            message_payload=payload,
        )
    except TextError as exc:
        return PreviewText(
            text=text,
            sent_text=None,
            ok=False,
            error=str(exc),
            characters=len(text),
            max_parts=options.max_parts,
            within_max_parts=False,
            message_payload=payload,
        )
    forced = encoded.forced_by
    within = encoded.part_count <= options.max_parts
    return PreviewText(
        text=text,
        sent_text=encoded.sent_text,
        ok=within,
        error=None
        if within
        else (
            f"the text needs {encoded.part_count} SMS parts in {encoded.encoding} but the "
            f"delivery allows {options.max_parts}: it would fail"
        ),
        encoding=encoded.encoding,
        data_coding=encoded.data_coding,
        characters=len(text),
        units=encoded.units,
        part_capacity=encoded.part_capacity,
        parts=encoded.part_count,
        part_ends=list(encoded.part_ends),
        max_parts=options.max_parts,
        within_max_parts=within,
        transliterated=[
            PreviewCharacter(index=t.index, char=t.original, replacement=t.replacement)
            for t in encoded.transliterated[:MAX_PREVIEW_DETAIL]
        ],
        transliterated_count=len(encoded.transliterated),
        forced_by=PreviewCharacter(index=forced.index, char=forced.char, encoding=forced.encoding)
        if forced is not None
        else None,
        message_payload=payload,
    )


def preview(account: Account, options: SmsOptions, texts: list[str]) -> PreviewResponse:
    shown, origin = sender(account, options)
    return PreviewResponse(
        account=account.name,
        sender=shown,
        sender_origin=origin,
        encoding_mapping=[
            f"{rule.encoding} (data_coding {rule.data_coding})"
            for rule in account.smsc.encoding_mapping
        ],
        transliteration=account.channel.transliteration,
        previews=[preview_text(account, options, text) for text in texts],
    )
