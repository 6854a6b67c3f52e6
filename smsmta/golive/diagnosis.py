"""The go-live check's diagnosis: the report, and what the ids, statuses and texts seen mean.

What it does
    `Step` and `Report` (what the check found, as data and as JSON), and the pure functions
    that read what the SMSC said: `bind_advice` and `submit_advice` (the settings to change,
    in the account's field names), `guess_id_formats` (every (mt_ack_id_format, sr_id_format)
    pair of `IdFormat` that makes two ids equal, best first), `format_fixes`,
    `id_difference` (case and zero padding), `ids_related`, `whole_id` (an id the regex
    cut), `suggest_id_regex`, `hex_or_decimal_alike`, `echo_differences`, and the helpers
    that take a receipt's ids apart (`receipt_ids`, `receipted_id`, `without_receipted`).

Contract
    Pure: every function gives the same answer for the same arguments and none raises on
    what a provider sends. Tested on their own (tests/smsmta/test_golive.py).

What it touches
    Nothing: no sockets, clock, database, settings file or logging. It reads receipts
    with `smsmta.smpp.receipt.interpret`, as the SMS process does.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smsmta.smpp.aio import BindError, BindSettings
from smsmta.smpp.constants import CommandStatus, status_name
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.receipt import (
    TAG_RECEIPTED_MESSAGE_ID,
    IdFormat,
    ReceiptRules,
    format_id,
    interpret,
)

PASS, FAIL, SKIP = "pass", "fail", "skip"

# The order pairs are tried in, and the tie-break among pairs that fit equally well.
_FORMATS = (IdFormat.AS_IS, IdFormat.DECIMAL, IdFormat.HEX_NUMBER, IdFormat.HEX_STRING)
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"(?:0[xX])?[0-9A-Fa-f]*[A-Fa-f][0-9A-Fa-f]*")
_HEX_PAIRS = re.compile(r"(?:[0-9A-Fa-f]{2})+")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of the check: what was done, what was seen, and what to change if it failed."""

    name: str
    status: str  # PASS, FAIL or SKIP
    summary: str
    details: list[tuple[str, str]] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "details": dict(self.details),
            "fixes": list(self.fixes),
        }


@dataclass
class Report:
    account: str
    to: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.status != FAIL for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "to": self.to,
            "ok": self.ok,
            "steps": [step.as_json() for step in self.steps],
        }


# ---------------------------------------------------------------------------------------------
# What the SMSC's answers mean
# ---------------------------------------------------------------------------------------------


# A fresh counter's first ids (0 to 9) read the same in decimal and hex: a test MT with such an
# id cannot show a provider writing hex MT-ack ids and decimal receipt ids. The check sends
# more, at most this many in all (a counter starting at 0 reaches "A" at the 11th).
MAX_TEST_MTS = 11


def hex_or_decimal_alike(message_id: str) -> bool:
    """Whether an id reads the same as a decimal and as a hexadecimal number (0 to 9)."""
    value = message_id.strip()
    return bool(_DIGITS.fullmatch(value)) and int(value) < 10


def bind_advice(error: BaseException, prefix: str, settings: BindSettings) -> tuple[str, list[str]]:
    """What a failed bind means and which settings to change.

    `prefix` is the account section holding this bind's login: `connection` or `receiver`.
    """
    where = f"{settings.host}:{settings.port}"
    if isinstance(error, BindError):
        name = status_name(error.status)
        said = f"the SMSC refused the bind: {name} (0x{error.status:08X})"
        by_status: dict[int, list[str]] = {
            CommandStatus.ESME_RINVPASWD: [f"{prefix}.password: the SMSC does not accept it"],
            CommandStatus.ESME_RINVSYSID: [
                f"{prefix}.system_id: the SMSC does not know {settings.system_id!r}"
            ],
            CommandStatus.ESME_RINVSYSTYP: [
                f"{prefix}.system_type: the SMSC refuses {settings.system_type!r}"
            ],
            CommandStatus.ESME_RBINDFAIL: [
                f"{prefix}.system_id and {prefix}.password first: many SMSCs answer "
                f"ESME_RBINDFAIL to a login they refuse (system_id {settings.system_id!r})",
                "then, bind refused: too many binds for this system_id (other processes bound, "
                "throughput.max_binds, connection.connections), this host's IP not allowed "
                f"by the provider, {prefix}.system_type, or the bind type "
                f"({settings.kind.name.lower()}: connection.mode) not enabled for the account",
            ],
            CommandStatus.ESME_RALYBND: ["the SMSC says this login is already bound"],
        }
        fixes = by_status.get(error.status)
        if fixes is None:
            fixes = [
                f"ask the provider what {name} means for a bind; check {prefix}.system_id, "
                f"{prefix}.password, {prefix}.system_type, smsc.bind_ton, smsc.bind_npi, "
                "smsc.address_range"
            ]
        return said, fixes
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"TLS: the certificate of {where} is not trusted: {error.verify_message}",
            [
                "connection.tls_ca_file: the CA bundle of the SMSC's certificate "
                "(smsc.skip_tls_verification only for tests)"
            ],
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"TLS handshake with {where} failed: {error.reason or error}",
            ["connection.tls: is this port a TLS port? (and connection.port)"],
        )
    if isinstance(error, socket.gaierror):
        return f"{settings.host!r} does not resolve: {error.strerror}", [f"{prefix}.server"]
    if isinstance(error, ConnectionRefusedError):
        return (
            f"connection refused by {where}: nothing listens there",
            [f"{prefix}.server", f"{prefix}.port"],
        )
    if isinstance(error, TimeoutError):
        return (
            f"no bind answer from {where} within throughput.bind_timeout "
            f"({settings.timeouts.bind:g} s)",
            [
                f"{prefix}.server, {prefix}.port: a firewall dropping packets, or the "
                "provider not allowing this host's IP",
                "connection.tls: a TLS port answers nothing to plain TCP (and the reverse)",
            ],
        )
    if isinstance(error, ConnectionError):  # closed before the bind_resp
        return (
            f"{where} closed the connection before answering the bind ({error})",
            [
                "connection.tls: the port may expect TLS (or plain TCP)",
                f"{prefix}.server, {prefix}.port, and whether the provider allows this host's IP",
            ],
        )
    if isinstance(error, OSError):
        return f"cannot reach {where}: {error.strerror or error}", [
            f"{prefix}.server",
            f"{prefix}.port",
        ]
    return f"bind failed: {error!r}", []


def submit_advice(status: int) -> list[str]:
    """Settings that usually explain a submit_sm_resp error status."""
    S = CommandStatus
    table: dict[int, list[str]] = {
        S.ESME_RINVSRCADR: [
            "channel.source_number or the delivery's From (the sender; none: the provider's own)",
            "channel.source_ton, channel.source_npi",
        ],
        S.ESME_RINVSRCTON: ["channel.source_ton"],
        S.ESME_RINVSRCNPI: ["channel.source_npi"],
        S.ESME_RINVDSTADR: [
            "--to (international format, e.g. +33612345678)",
            "channel.dest_ton, channel.dest_npi, smsc.send_full_phone_number",
        ],
        S.ESME_RINVDSTTON: ["channel.dest_ton"],
        S.ESME_RINVDSTNPI: ["channel.dest_npi"],
        S.ESME_RINVSERTYP: ["channel.service_type"],
        S.ESME_RINVREGDLVFLG: [
            "the provider refuses registered_delivery: ask it to enable "
            "delivery receipts for this account"
        ],
        S.ESME_RINVESMCLASS: ["smsc.message_payload (long messages), or a shorter --text"],
        S.ESME_RINVMSGLEN: ["smsc.message_payload, or a shorter --text"],
        S.ESME_RTHROTTLED: ["throughput.max_mt_per_second (the provider throttles)"],
        S.ESME_RMSGQFUL: ["throughput.max_mt_per_second (the provider's queue is full)"],
        S.ESME_RINVBNDSTS: ["connection.mode: the bind cannot send (a receiver?)"],
    }
    return table.get(
        status, [f"ask the provider what {status_name(status)} means for this account's MT"]
    )


@dataclass(frozen=True)
class FormatGuess:
    """A pair of id formats under which the MT-ack id and the SR id become the same id."""

    mt_ack_id_format: IdFormat
    sr_id_format: IdFormat
    canonical: str


def _natural(raw: str) -> set[IdFormat]:
    """The formats an id looks written in (its best readings)."""
    value = raw.strip()
    if _DIGITS.fullmatch(value):
        return {IdFormat.DECIMAL}
    looks: set[IdFormat] = set()
    if _HEX.fullmatch(value):
        looks.add(IdFormat.HEX_NUMBER)
    if _HEX_PAIRS.fullmatch(value):
        looks.add(IdFormat.HEX_STRING)
    return looks or {IdFormat.AS_IS}


def try_format(raw: str, fmt: IdFormat) -> str | None:
    """`raw` written in `fmt`, or None when `fmt` cannot read it."""
    try:
        return format_id(raw, fmt)
    except ValueError:
        return None


def guess_id_formats(
    ack_id: str, sr_id: str, current: tuple[IdFormat, IdFormat] | None = None
) -> list[FormatGuess]:
    """Every (mt_ack_id_format, sr_id_format) pair that makes the two ids equal, best first.

    Best: both ids read in the format they look written in (digits: decimal; hex digits
    with a letter: hex_number; ...), since that reading also absorbs case and zero-padding
    differences the provider may show on other ids; then the pair closest to `current`
    (mt_ack, sr); then as_is < decimal < hex_number < hex_string.
    """
    ack_looks, sr_looks = _natural(ack_id), _natural(sr_id)
    guesses: list[tuple[tuple[int, int, int], FormatGuess]] = []
    for ack_index, ack_fmt in enumerate(_FORMATS):
        ack = try_format(ack_id, ack_fmt)
        if ack is None:
            continue
        for sr_index, sr_fmt in enumerate(_FORMATS):
            sr = try_format(sr_id, sr_fmt)
            if sr is None or sr != ack:
                continue
            natural = (ack_fmt in ack_looks) + (sr_fmt in sr_looks)
            kept = 0 if current is None else (ack_fmt == current[0]) + (sr_fmt == current[1])
            rank = (-natural, -kept, ack_index * len(_FORMATS) + sr_index)
            guesses.append((rank, FormatGuess(ack_fmt, sr_fmt, ack)))
    guesses.sort(key=lambda item: item[0])
    return [guess for _, guess in guesses]


def format_fixes(guess: FormatGuess, current: tuple[IdFormat, IdFormat]) -> list[str]:
    """The settings lines that turn `current` (mt_ack, sr) into `guess`."""
    fixes = []
    if guess.mt_ack_id_format != current[0]:
        fixes.append(f"set smsc.mt_ack_id_format: {guess.mt_ack_id_format.value}")
    if guess.sr_id_format != current[1]:
        fixes.append(f"set smsc.sr_id_format: {guess.sr_id_format.value}")
    return fixes


def id_difference(ack_id: str, sr_id: str) -> str | None:
    """How two ids that no id-format pair reconciles differ, when they differ only a little."""
    a, s = ack_id.strip(), sr_id.strip()
    if a == s:
        return None
    if a.casefold() == s.casefold():
        return f"the ids differ only in letter case ({a!r} vs {s!r})"
    if a.lstrip("0") == s.lstrip("0"):
        padded = "the MT-ack id" if len(a) > len(s) else "the SR id"
        return f"the ids differ only in zero padding ({a!r} vs {s!r}): {padded} is padded"
    if a.lstrip("0").casefold() == s.lstrip("0").casefold():
        return f"the ids differ in letter case and zero padding ({a!r} vs {s!r})"
    return None


def ids_related(ack_id: str, other: str) -> bool:
    """Whether `other` (an id in a receipt) names the MT whose submit_sm_resp said `ack_id`."""
    if not ack_id or not other:
        return False
    return (
        ack_id == other
        or id_difference(ack_id, other) is not None
        or bool(guess_id_formats(ack_id, other))
    )


def echo_differences(sent: str, echoed: str) -> list[tuple[int, str, str]]:
    """(position, sent character, echoed character) where a receipt's `Text:` differs.

    Only the overlap is compared: providers echo the first 10 to 20 characters.
    """
    return [(i, a, b) for i, (a, b) in enumerate(zip(sent, echoed, strict=False)) if a != b]


def _id_class(id_seen: str) -> str:
    if _DIGITS.fullmatch(id_seen):
        return "[0-9]+"
    if re.fullmatch(r"[0-9A-Fa-f]+", id_seen):
        return "[0-9a-f]+"
    if re.fullmatch(r"[0-9A-Za-z]+", id_seen):
        return "[0-9a-z]+"
    if re.fullmatch(r"[0-9A-Za-z_-]+", id_seen):
        return "[0-9a-z_-]+"
    return r"[^\s]+"


_ID_TAIL = re.compile(r"(?:[0-9A-Za-z]|[-_.](?=[0-9A-Za-z]))+")


def whole_id(text: str, captured: str) -> str | None:
    """The whole id when `captured` (what sr_id_regex took) is only its start, else None.

    The id is cut when, where the text carries it, alphanumerics follow it directly or after
    one `-`, `_` or `.` (a UUID cut at its first dash, 10 of 16 characters).
    """
    if not captured:
        return None
    for match in re.finditer(re.escape(captured), text, re.IGNORECASE):
        start, end = match.span()
        if start and text[start - 1].isalnum():
            continue
        tail = _ID_TAIL.match(text, end)
        return None if tail is None else text[start : tail.end()]
    return None


def suggest_id_regex(
    short_message: bytes | str,
    tlvs: Sequence[tuple[int, Any]],
    rules: ReceiptRules,
    id_seen: str,
    *,
    strip_zeros: bool = False,
) -> str | None:
    """An SR id regex that captures `id_seen` from this receipt's text, checked by running it.

    The id is looked for as a whole token in the receipt's text; the regex is the label
    written before it (`id:`, `msgid=`...) and a character class fitting the id; with
    `strip_zeros` the leading zeros stay outside the capture. Returns None when the text
    does not carry the id.
    """
    if not id_seen:
        return None
    wanted = (id_seen.lstrip("0") or "0") if strip_zeros else id_seen
    text = interpret(short_message, tlvs, rules).text
    candidates: list[str] = []
    for match in re.finditer(re.escape(id_seen), text, re.IGNORECASE):
        start, end = match.span()
        if (start and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum()):
            continue
        before = text[:start]
        label_match = re.search(r"(\S*?)(\s*)$", before)
        assert label_match is not None
        label, gap = label_match.group(1), label_match.group(2)
        body = f"{'0*' if strip_zeros else ''}({_id_class(wanted)})"
        if label:
            lead = r"\b" if label[0].isalnum() else ""
            space = r"\s*" if gap else ""
            candidates.append(f"(?i){lead}{re.escape(label)}{space}{body}")
        elif not before.strip():
            candidates.append(r"(?i)^\s*" + body)
    for pattern in candidates:
        try:
            trial = dataclasses.replace(rules, id_regex=re.compile(pattern))
        except re.error:  # pragma: no cover - escaped labels always compile
            continue
        seen = interpret(short_message, without_receipted(tlvs, trial), trial)
        if seen.raw_id is not None and seen.raw_id.casefold() == wanted.casefold():
            return pattern
    return None


def without_receipted(
    tlvs: Sequence[tuple[int, Any]], rules: ReceiptRules
) -> tuple[tuple[int, Any], ...]:
    """The TLVs as the id regex sees them, without the receipted_message_id fallback.

    With sr_id_in_optional_fields the TLV is part of the text the regex reads: kept.
    """
    if rules.id_in_optional_fields:
        return tuple(tlvs)
    return tuple((tag, value) for tag, value in tlvs if tag != TAG_RECEIPTED_MESSAGE_ID)


def receipted_id(tlvs: Iterable[tuple[int, Any]]) -> str | None:
    """The receipted_message_id TLV's value, as text (None when absent)."""
    for tag, value in tlvs:
        if tag == TAG_RECEIPTED_MESSAGE_ID:
            if isinstance(value, bytes | bytearray):
                value = bytes(value).split(b"\0", 1)[0].decode("latin-1")
            return str(value)
    return None


def short_message_of(pdu: Pdu) -> bytes | str:
    """A deliver_sm's short_message (empty when it has none)."""
    return getattr(pdu, "short_message", b"") or b""


def receipt_ids(pdu: Pdu, rules: ReceiptRules) -> list[str]:
    """Every id a receipt carries: the account regex's, the default regex's, the TLV's."""
    ids: list[str] = []
    default = ReceiptRules.build("probe", id_in_optional_fields=False)
    for r in (rules, default):
        raw = interpret(short_message_of(pdu), without_receipted(pdu.tlvs, r), r).raw_id
        if raw and raw not in ids:
            ids.append(raw)
    tlv = receipted_id(pdu.tlvs)
    if tlv and tlv not in ids:
        ids.append(tlv)
    return ids


def looks_final(stat: str | None) -> bool:
    """A stat that a provider means as final though the account's regexes call it other."""
    word = (stat or "").upper()
    return word not in {"", "ENROUTE", "ACCEPTD", "ACCEPTED", "BUFFRED", "BUFFERED", "SCHEDULED"}


def shown(canonical: str | None) -> str:
    """An id after its format, or `?` when the format cannot read it."""
    return "?" if canonical is None else repr(canonical)


def yaml_quote(text: str) -> str:
    """A regex as a single-quoted YAML scalar (backslashes need no escaping there)."""
    return "'" + text.replace("'", "''") + "'"
