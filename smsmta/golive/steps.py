"""The go-live check's steps, each built from what the probe saw.

What it does
    Turns the probe's observations (the account's settings, a submit_sm_resp or its
    absence, the MT-ack id, the receipt and the ids, stat and text it carries) into
    `Step`s: pass / fail / skip, what was seen, and for a failure the settings to change,
    in the account's field names. Each `*_step` returns its step; `id_steps`,
    `agreement_step`, `stat_step` and `echo_step` hand theirs to `add`, in the order
    the report lists them.

Contract
    Pure: no sockets, clock, database or logging. The receipt is read as the SMS process
    reads it (`smsmta.smpp.receipt.interpret` with the account's rules); the diagnosis
    (`smsmta.golive.diagnosis`) says what differences mean.

What it touches
    Nothing but its arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from smsmta.golive.diagnosis import (
    FAIL,
    PASS,
    SKIP,
    Step,
    echo_differences,
    format_fixes,
    guess_id_formats,
    id_difference,
    looks_final,
    receipted_id,
    short_message_of,
    shown,
    submit_advice,
    suggest_id_regex,
    try_format,
    whole_id,
    without_receipted,
    yaml_quote,
)
from smsmta.settings import Account
from smsmta.smpp.constants import status_name
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.receipt import (
    IdFormat,
    IdSource,
    Outcome,
    Receipt,
    ReceiptRules,
    format_id,
    id_disagreement_fix,
    interpret,
)
from smsmta.smpp.text import EncodedMessage, TextError

AddStep = Callable[[Step], Step]


def settings_step(account: Account) -> Step:
    """The settings the check reads ids and receipts with (always passes)."""
    c, s = account.connection, account.smsc
    details = [
        ("mode", c.mode.value),
        ("smsc_name", c.smsc_name),
        ("mt_ack_id_format", s.mt_ack_id_format.value),
        ("sr_id_format", s.sr_id_format.value),
        ("sr_id_regex", s.sr_id_regex),
        ("sr_id_in_optional_fields", str(s.sr_id_in_optional_fields).lower()),
        ("sr_id_in_text_field", str(s.sr_id_in_text_field).lower()),
        (
            "encoding_mapping",
            ", ".join(f"{r.encoding} ({r.data_coding})" for r in s.encoding_mapping),
        ),
    ]
    state = "" if account.enabled else " (disabled: tested anyway)"
    return Step("settings", PASS, f"account {account.name}{state}", details)


def build_failed_step(error: TextError) -> Step:
    """The test text cannot be encoded with the account's encodings."""
    return Step(
        "build MT",
        FAIL,
        f"the test text cannot be sent with this account's encodings: {error}",
        fixes=[
            "smsc.encoding_mapping (add ucs2, data_coding 8), or "
            "channel.transliteration: true, or another --text"
        ],
    )


def mt_details(pdus: tuple[Pdu, ...], encoded: EncodedMessage) -> list[tuple[str, str]]:
    """What the test MT is, as the submit step shows it."""
    return [
        ("to", pdus[0].destination_addr),
        ("from", pdus[0].source_addr or "(empty: the SMSC's default)"),
        ("text", encoded.sent_text),
        ("encoding", f"{encoded.encoding} (data_coding {encoded.data_coding})"),
        ("parts", str(len(pdus))),
        ("registered_delivery", str(pdus[0].registered_delivery)),
    ]


def no_answer_step(error: Exception, mt_timeout: float, details: list[tuple[str, str]]) -> Step:
    """No submit_sm_resp: the window expired or the connection closed."""
    return Step(
        "submit",
        FAIL,
        f"no submit_sm_resp ({error}) within throughput.mt_timeout ({mt_timeout:g} s)",
        details,
        ["ask the provider why the MT gets no answer; check throughput.mt_timeout"],
    )


def refused_step(status: int, details: list[tuple[str, str]]) -> Step:
    """The SMSC answered the test MT with an error status."""
    return Step(
        "submit",
        FAIL,
        f"the SMSC refused the MT: {status_name(status)} (0x{status:08X})",
        details,
        [f"check {fix}" for fix in submit_advice(status)],
    )


def ack_step(ack_raw: str, mt_ack_id_format: IdFormat) -> tuple[Step, str | None]:
    """The MT-ack id read with smsc.mt_ack_id_format, and the provider_msg_id it gives."""
    details = [("message_id (raw)", repr(ack_raw)), ("mt_ack_id_format", mt_ack_id_format.value)]
    try:
        ack_id = format_id(ack_raw, mt_ack_id_format)
    except ValueError as error:
        return Step("MT-ack id", FAIL, str(error), details, ["see the id match step"]), None
    details.append(("provider_msg_id", repr(ack_id)))
    return Step("MT-ack id", PASS, f"provider_msg_id {ack_id!r}", details), ack_id


def no_receipt_step(
    ack_raw: str, wait: float, others: list[str], store_problem: str | None
) -> Step:
    """No receipt for the test MT within `wait`; `others` are the ids handed back."""
    fixes = [
        "the test MT asked for a receipt (registered_delivery 1): check the provider's "
        "delivery-receipt (DLR) settings for this system_id",
        "the receiver bind: receiver.* settings (or connection.* without a receiver "
        "section), and that the provider routes receipts to it",
        f"receipts may just be slow: raise --wait (was {wait:g} s)",
    ]
    others = [o for o in others if o != "an MO"]
    summary = f"no receipt for message_id {ack_raw!r} within {wait:g} s"
    extra = []
    if others:
        summary += f"; {len(others)} receipt(s) for other ids arrived"
        extra.append(("other receipt ids", "; ".join(others[:5])))
        fixes.insert(
            0,
            "if one of those is the test's receipt, the provider's receipt id is not "
            "related to its submit_sm_resp id: ask the provider which id receipts carry",
        )
    if store_problem:
        extra.append(("SMS process's receipts", f"not looked at: {store_problem}"))
    return Step("receipt", FAIL, summary, extra, fixes)


def receipt_step(pdu: Pdu, receipt: Receipt, after: float, where: str, stored: bool) -> Step:
    """The receipt chosen, `after` seconds after the MT; `stored`: read from the database."""
    tlv_id = receipted_id(pdu.tlvs)
    state = pdu.tlv(0x0427)
    details = [
        ("arrived after", f"{after:.1f} s"),
        ("found in", where),
        ("text", receipt.text),
        ("receipted_message_id", repr(tlv_id) if tlv_id is not None else "(absent)"),
        ("message_state", str(state) if state is not None else "(absent)"),
    ]
    summary = "receipt received"
    if stored:
        summary = f"receipt received by the running SMS process, read from {where}"
        details.append(
            (
                "note",
                "the SMS process finds no MT for it (the check's MT is not recorded) and "
                "keeps it as unmatched after sms_process.receipt_match_wait",
            )
        )
    return Step("receipt", PASS, summary, details)


def id_steps(
    add: AddStep,
    account: Account,
    rules: ReceiptRules,
    current: tuple[IdFormat, IdFormat],
    pdu: Pdu,
    receipt: Receipt,
    ack_raw: str,
    ack_id: str | None,
    tlv_id: str | None,
) -> None:
    smsc = account.smsc
    short_message = short_message_of(pdu)
    by_regex = interpret(short_message, without_receipted(pdu.tlvs, rules), rules)
    details = [("sr_id_regex", smsc.sr_id_regex)]
    sr_raw: str | None = by_regex.raw_id
    if sr_raw is None:
        target = tlv_id or ack_raw
        suggestion = suggest_id_regex(short_message, pdu.tlvs, rules, target)
        if suggestion is None and tlv_id and tlv_id != ack_raw:
            suggestion = suggest_id_regex(short_message, pdu.tlvs, rules, ack_raw)
        if suggestion is not None:
            details.append(("suggested", suggestion))
            if receipt.id_source is IdSource.RECEIPTED_MESSAGE_ID:
                details.append(("fallback", f"receipted_message_id {receipt.raw_id!r}"))
            longer = (
                f" (the id, {len(target)} characters, is longer than the 10 alphanumerics "
                "the default sr_id_regex takes)"
                if len(target) > 10
                else ""
            )
            add(
                Step(
                    "SR id",
                    FAIL,
                    f"sr_id_regex found no id in the receipt text, which carries one{longer}",
                    details,
                    [f"set smsc.sr_id_regex: {yaml_quote(suggestion)}"],
                )
            )
        elif receipt.id_source is IdSource.RECEIPTED_MESSAGE_ID:
            details.append(("receipted_message_id", repr(receipt.raw_id)))
            details.append(("after mt_ack_id_format", repr(receipt.provider_id)))
            add(
                Step(
                    "SR id",
                    PASS,
                    "the text carries no id; taken from the receipted_message_id TLV",
                    details,
                )
            )
        else:
            add(
                Step(
                    "SR id",
                    FAIL,
                    "no id found: sr_id_regex matched nothing and there is no usable "
                    "receipted_message_id TLV",
                    details,
                    [
                        "smsc.sr_id_regex (one capture group around the id), "
                        "smsc.sr_id_in_optional_fields, smsc.sr_id_in_text_field"
                    ],
                )
            )
        sr_raw = receipt.raw_id
    else:
        details.append(("captured", repr(sr_raw)))
        details.append(("sr_id_format", smsc.sr_id_format.value))
        whole = whole_id(by_regex.text, sr_raw)
        if whole is not None:
            details.append(("whole id", repr(whole)))
            suggestion = suggest_id_regex(short_message, pdu.tlvs, rules, whole)
            fix = (
                f"set smsc.sr_id_regex: {yaml_quote(suggestion)}"
                if suggestion is not None
                else f"smsc.sr_id_regex: make its capture group take the whole id {whole!r}"
            )
            add(
                Step(
                    "SR id",
                    FAIL,
                    f"sr_id_regex cuts the id: it captured {sr_raw!r} of {whole!r} "
                    f"({len(whole)} characters; the default takes up to 10 alphanumerics "
                    "and stops at punctuation)",
                    details,
                    [fix],
                )
            )
        elif by_regex.provider_id is not None:
            details.append(("SR id", repr(by_regex.provider_id)))
            add(Step("SR id", PASS, f"sr_id_regex captured {sr_raw!r}", details))
        else:
            details.append(("error", by_regex.id_error or ""))
            add(
                Step(
                    "SR id",
                    FAIL,
                    f"sr_id_regex captured {sr_raw!r}, which sr_id_format "
                    f"{smsc.sr_id_format.value} cannot read",
                    details,
                    ["see the id match step"],
                )
            )

    # --- do the two ids match, as the SMS process would match them? -----------------------
    match_details = [
        ("MT-ack id", f"{ack_raw!r} -> {shown(ack_id)}"),
        (
            "SR id",
            f"{sr_raw!r} -> {shown(receipt.provider_id)}" if sr_raw is not None else "(none)",
        ),
    ]
    if ack_id is not None and receipt.provider_id == ack_id:
        add(Step("id match", PASS, f"the receipt matches the MT ({ack_id!r})", match_details))
        return
    if sr_raw is None:
        add(Step("id match", FAIL, "no SR id to match", match_details, ["see the SR id step"]))
        return
    guesses = guess_id_formats(ack_raw, sr_raw, current)
    if guesses:
        best = guesses[0]
        fixes = format_fixes(best, current)
        match_details.append(
            (
                "guess",
                f"MT-ack id {ack_raw!r} as {best.mt_ack_id_format.value}, SR id {sr_raw!r} as "
                f"{best.sr_id_format.value}: both {best.canonical!r}",
            )
        )
        others = [f"{g.mt_ack_id_format.value}/{g.sr_id_format.value}" for g in guesses[1:4]]
        if others:
            match_details.append(("also fits", ", ".join(others)))
        if not fixes:  # the formats fit, the regex took another id
            fixes = ["see the SR id step"]
        add(
            Step(
                "id match",
                FAIL,
                "the receipt's id does not match the MT-ack id with these id formats",
                match_details,
                fixes,
            )
        )
        return
    difference = id_difference(ack_raw, sr_raw)
    fixes = []
    if difference is not None:
        match_details.append(("difference", difference))
        if "SR id is padded" in difference or (
            "zero padding" in difference and len(sr_raw) > len(ack_raw)
        ):
            suggestion = suggest_id_regex(short_message, pdu.tlvs, rules, sr_raw, strip_zeros=True)
            if suggestion is not None:
                fixes.append(f"set smsc.sr_id_regex: {yaml_quote(suggestion)}")
        if not fixes:
            fixes.append(
                "no id format changes letter case or strips zeros of non-numeric ids: "
                "ask the provider to write both ids the same way"
            )
    else:
        fixes.append(
            "the receipt's id is unrelated to the submit_sm_resp id under every id format: "
            "check smsc.sr_id_regex captures the right field, and ask the provider"
        )
    add(
        Step(
            "id match",
            FAIL,
            "no pair of id formats makes the two ids equal",
            match_details,
            fixes,
        )
    )


def agreement_step(
    add: AddStep,
    rules: ReceiptRules,
    current: tuple[IdFormat, IdFormat],
    pdu: Pdu,
    receipt: Receipt,
    tlv_id: str | None,
) -> None:
    """Does the text id agree with receipted_message_id once formatted, as the SMS process
    reads them? When they disagree it goes by the TLV and counts each such receipt."""
    if tlv_id is None or not tlv_id.strip():
        return
    by_regex = interpret(short_message_of(pdu), without_receipted(pdu.tlvs, rules), rules)
    text_raw = by_regex.raw_id
    if text_raw is None:
        return  # no text id: the SR id step says so
    name = "text id vs receipted_message_id"
    details = [
        ("text id", f"{text_raw!r} -> {shown(by_regex.provider_id)}"),
        ("receipted_message_id", f"{tlv_id!r} -> {shown(try_format(tlv_id, current[0]))}"),
    ]
    if receipt.overruled_text_id is None:
        add(Step(name, PASS, "the text id and receipted_message_id agree", details))
        return
    if whole_id(by_regex.text, text_raw) is not None:
        fixes = ["see the SR id step (sr_id_regex cuts the id)"]
    else:
        guesses = guess_id_formats(tlv_id, text_raw, current)
        fixes = format_fixes(guesses[0], current) if guesses else []
        if not fixes:
            fixes = [id_disagreement_fix(receipt, rules)]
    add(
        Step(
            name,
            FAIL,
            f"the text id {text_raw!r} and receipted_message_id {tlv_id!r} disagree with "
            "these id formats: the SMS process goes by receipted_message_id, counts each "
            "such receipt (smsmta_receipt_id_disagreements) and logs the first",
            details,
            fixes,
        )
    )


def stat_step(
    add: AddStep,
    rules: ReceiptRules,
    receipt: Receipt,
    intermediate: list[Receipt],
    wait: float,
) -> None:
    details = [
        ("stat", receipt.stat or "(none)"),
        ("err", receipt.err or "(none)"),
        ("classification", receipt.outcome.value),
        ("sr_success_regex", rules.success_regex.pattern),
        ("sr_error_regex", rules.error_regex.pattern),
    ]
    if receipt.outcome is Outcome.DELIVERED:
        add(Step("stat", PASS, f"{receipt.stat}: delivered", details))
    elif receipt.outcome is Outcome.FAILED:
        details.append(("message log", receipt.log_key))
        add(
            Step(
                "stat",
                FAIL,
                f"the provider reports the test MT as not delivered: {receipt.stat} "
                f"err {receipt.err or '-'}",
                details,
                [
                    "check that --to is a reachable handset; ask the provider what err "
                    f"{receipt.err or '-'} means"
                ],
            )
        )
    elif looks_final(receipt.stat):
        add(
            Step(
                "stat",
                FAIL,
                f"stat {receipt.stat!r} is neither success nor error for this account: the "
                "message would stay 'sent' forever",
                details,
                [
                    "smsc.sr_success_regex or smsc.sr_error_regex: make one of them match "
                    f"{receipt.stat!r}"
                ],
            )
        )
    else:
        stats = ", ".join(r.stat or "-" for r in intermediate)
        add(
            Step(
                "stat",
                FAIL,
                f"only intermediate receipts within {wait:g} s ({stats})",
                details,
                [
                    f"raise --wait (was {wait:g} s)",
                    "smsc.sr_success_regex / sr_error_regex "
                    "if one of these stats is final for this provider",
                ],
            )
        )


def echo_step(add: AddStep, encoded: EncodedMessage, receipt: Receipt) -> None:
    echoed = receipt.fields.get("text")
    if not echoed:
        add(Step("encoding", SKIP, "the receipt does not echo the text (no Text:)"))
        return
    sent = encoded.sent_text
    differences = echo_differences(sent, echoed)
    details = [
        ("sent", sent),
        ("echoed", echoed),
        ("encoding", f"{encoded.encoding} (data_coding {encoded.data_coding})"),
    ]
    if not differences:
        compared = min(len(sent), len(echoed))
        add(Step("encoding", PASS, f"the echoed text matches ({compared} characters)", details))
        return
    listed = ", ".join(f"{a!r} came back as {b!r} (position {i + 1})" for i, a, b in differences)
    details.append(("different", listed))
    add(
        Step(
            "encoding",
            FAIL,
            f"the provider mangles {len(differences)} character(s): {listed}",
            details,
            [
                f"smsc.encoding_mapping: the provider does not read data_coding "
                f"{encoded.data_coding} as {encoded.encoding}; try latin1 (data_coding 3) or "
                "ucs2 (data_coding 8) first, or channel.transliteration: true",
                "some providers echo only ASCII in receipts: confirm on the handset",
            ],
        )
    )
