"""The go-live check of a provider account: `smsmta account test --config FILE NAME --to MSISDN`.

What it does
    Runs, against the real SMSC of one mid account, what Adobe's set-up guide leaves as a
    manual checklist: bind (transmitter + receiver, or one transceiver in TRX mode), send
    one test MT with registered_delivery on, wait for its receipt, and read that receipt
    exactly as the SMS process would (`smsmta.smpp.receipt.interpret` with the account's rules).
    Each step becomes a `Step` (pass / fail / skip, what was seen, and for a failure the
    settings to change, in the account's field names). `Report.ok` is true only when no
    step failed.

Contract
    - `run_check(account, to, ...)` never raises on provider behaviour: bind refusals,
      timeouts, closed sockets, odd receipts all end as failed steps. Unencodable text
      is a failed step too (it names `smsc.encoding_mapping`).
    - The diagnosis is pure functions, tested on their own: `bind_advice`, `submit_advice`,
      `guess_id_formats` (every (mt_ack_id_format, sr_id_format) pair of `IdFormat` that
      makes the two ids seen equal, best first), `id_difference` (case and zero padding),
      `suggest_id_regex`, `whole_id` (an id the regex cut), `hex_or_decimal_alike`,
      `echo_differences`, `ids_related`.
    - Ids 0 to 9 read the same in decimal and hex: while the MT-ack id is one of them the
      check sends another test MT (at most `MAX_TEST_MTS`), so that a provider writing hex
      MT-ack ids and decimal receipt ids shows. A receipt whose text id disagrees with
      receipted_message_id is reported (the SMS process goes by the TLV and counts it).
    - Receipts and MOs that are not the test MT's (an account already carrying traffic)
      are answered ESME_RX_T_APPN, a temporary error, so the SMSC delivers them again,
      to the SMS process's binds; the test's own receipt is answered ESME_ROK.
    - Passwords are never printed: bind settings have no password in their repr and the
      report only names the field.
    - Every bind counts (SPEC section 4): with max_binds and a database, each test bind on
      the account's login first takes a free bind slot (smsmta.binds.TestSlots, a lease
      of its own); when the running services hold them all the check fails saying so,
      naming the holders, instead of exceeding the contract.
    - A live account: the SMSC may hand the test's receipt to the running SMS process's
      receiver bind rather than to the check's. Given the database (`database_dsn`; the
      command passes the settings file's), the check also looks, while it waits, for the
      receipt where the SMS process stores it (`mid.inbox`, then `mid.receipt`), read
      only, and reads it from there; the receipt step says where it was found.

What it touches
    SMPP sockets to the account's SMSC (through smsmta.smpp.aio: one-shot `connect`, no
    reconnect), the event loop's clock; with max_binds the database's bind slots
    (`mid.mta_lease`, `mid.bind_slot`); with `database_dsn`, reads of `mid.external_account`,
    `mid.inbox` and `mid.receipt`. No settings file (the caller loads it), no metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from mta.submit import DeliveryOptions, MtBuilder
from sms_process.receipts import AccountRules
from smsmta.binds import TestSlots, bind_settings, receiver_settings
from smsmta.db import InboxKind
from smsmta.queue.inbox import kind_of
from smsmta.settings import Account, Mode
from smsmta.smpp import codec
from smsmta.smpp.aio import BaseHandler, BindError, BindKind, BindSettings, SmppConnection, connect
from smsmta.smpp.constants import CommandStatus, status_name
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import DeliverSm, Pdu
from smsmta.smpp.receipt import (
    TAG_RECEIPTED_MESSAGE_ID,
    IdFormat,
    IdSource,
    Outcome,
    Receipt,
    ReceiptRules,
    format_id,
    id_disagreement_fix,
    interpret,
)
from smsmta.smpp.session import Expired, Response
from smsmta.smpp.text import TextError, encode_message

PASS, FAIL, SKIP = "pass", "fail", "skip"
DEFAULT_TEXT = "smsmta go-live test"
DEFAULT_WAIT = 60.0

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
# Diagnosis: pure functions
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
        fixes = {
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
        }.get(error.status)
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


def _try_format(raw: str, fmt: IdFormat) -> str | None:
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
        ack = _try_format(ack_id, ack_fmt)
        if ack is None:
            continue
        for sr_index, sr_fmt in enumerate(_FORMATS):
            sr = _try_format(sr_id, sr_fmt)
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
        seen = interpret(short_message, _without_receipted(tlvs, trial), trial)
        if seen.raw_id is not None and seen.raw_id.casefold() == wanted.casefold():
            return pattern
    return None


def _without_receipted(
    tlvs: Sequence[tuple[int, Any]], rules: ReceiptRules
) -> tuple[tuple[int, Any], ...]:
    """The TLVs as the id regex sees them, without the receipted_message_id fallback.

    With sr_id_in_optional_fields the TLV is part of the text the regex reads: kept.
    """
    if rules.id_in_optional_fields:
        return tuple(tlvs)
    return tuple((tag, value) for tag, value in tlvs if tag != TAG_RECEIPTED_MESSAGE_ID)


def _receipted(tlvs: Iterable[tuple[int, Any]]) -> str | None:
    for tag, value in tlvs:
        if tag == TAG_RECEIPTED_MESSAGE_ID:
            if isinstance(value, bytes | bytearray):
                value = bytes(value).split(b"\0", 1)[0].decode("latin-1")
            return str(value)
    return None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def receipt_rules(account: Account) -> ReceiptRules:
    """The account's receipt rules, built as the SMS process builds them."""
    return AccountRules.of(0, account).rules


@dataclass
class _Arrived:
    conn: SmppConnection | None  # None: read from the database, the SMS process answered it
    pdu: Pdu
    at: float
    where: str = "the check's receiver bind"


# The test MT is not in provider_msg_id, so its receipt matches nothing: it waits in the
# inbox once tried (attempts > 0), then is kept as unmatched (or invalid, without an id).
# Receipts of the account's traffic, matched at once, are not read.
STORED_INBOX = """
SELECT i.id, i.pdu FROM mid.inbox i JOIN mid.external_account a ON a.id = i.account_id
WHERE a.internal_name = %s AND i.kind = 'receipt' AND i.received_at >= %s AND i.attempts > 0
  AND NOT (i.id = ANY(%s))
ORDER BY i.id LIMIT 1000
"""
STORED_RECEIPTS = """
SELECT r.id, r.text FROM mid.receipt r JOIN mid.external_account a ON a.id = r.account_id
WHERE a.internal_name = %s AND r.received_at >= %s AND r.result IN ('unmatched', 'invalid')
  AND r.id > %s
ORDER BY r.id LIMIT 1000
"""


class _Stored:
    """Receipts of the account that the running SMS process stored, read only.

    `open` takes the database's clock as the start; `related` returns the new receipts
    (inbox rows as received; handled rows as their text) whose ids name the test MT.
    A database error ends the look-up (`problem` says why); it never raises.
    """

    def __init__(self, dsn: str, account: str) -> None:
        self.dsn = dsn
        self.account = account
        self.conn: psycopg.AsyncConnection | None = None
        self.since: Any = None
        self.inbox_seen: list[int] = []
        self.last_receipt = 0
        self.problem: str | None = None

    async def open(self) -> None:
        try:
            self.conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=5, application_name="account-test"
            )
            cursor = await self.conn.execute("SELECT now() - interval '2 seconds'")
            row = await cursor.fetchone()
            self.since = row[0] if row else None
        except (psycopg.Error, OSError) as error:
            self.problem = f"cannot read the database: {type(error).__name__}"
            await self.close()

    async def related(self, ack_raw: str, rules: ReceiptRules, now: float) -> list[_Arrived]:
        if self.conn is None:
            return []
        found: list[_Arrived] = []
        try:
            cursor = await self.conn.execute(
                STORED_INBOX, (self.account, self.since, self.inbox_seen)
            )
            for row_id, data in await cursor.fetchall():
                self.inbox_seen.append(row_id)
                try:
                    pdu = codec.decode(bytes(data))
                except RemoteProtocolError:
                    continue
                found.append(_Arrived(None, pdu, now, "mid.inbox (the SMS process's bind)"))
            cursor = await self.conn.execute(
                STORED_RECEIPTS, (self.account, self.since, self.last_receipt)
            )
            for row_id, text in await cursor.fetchall():
                self.last_receipt = row_id
                pdu = DeliverSm(esm_class=0x04, short_message=text.encode("utf-8", "replace"))
                found.append(_Arrived(None, pdu, now, "mid.receipt (handled by the SMS process)"))
        except psycopg.Error as error:
            self.problem = f"reading the database failed: {type(error).__name__}"
            await self.close()
            return []
        exact: list[_Arrived] = []
        related: list[_Arrived] = []
        for item in found:
            ids = _receipt_ids(item.pdu, rules)
            if ack_raw in ids:
                exact.append(item)
            elif any(ids_related(ack_raw, i) for i in ids):
                related.append(item)
        return exact + related  # an id written as the MT-ack id first

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None


class _Probe(BaseHandler):
    """Handler of the test's binds: one submit's answer, and the receipts that arrive."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.answers: dict[int, asyncio.Future[Pdu]] = {}
        self.held: list[_Arrived] = []  # receipts not yet known to be ours or not
        self.arrived = asyncio.Event()
        self.ack_id: str | None = None
        self.spent: tuple[str, ...] = ()
        self.ours: list[_Arrived] = []
        self.others: list[str] = []  # ids of receipts (and MOs) handed back to the SMSC
        self._rules: ReceiptRules | None = None
        self._loop = loop

    def expect(self, key: int) -> asyncio.Future[Pdu]:
        future: asyncio.Future[Pdu] = self._loop.create_future()
        self.answers[key] = future
        return future

    def on_response(self, conn: SmppConnection, response: Response) -> None:
        future = self.answers.get(response.context)
        if future is not None and not future.done():
            future.set_result(response.pdu)

    def on_expired(self, conn: SmppConnection, expired: Expired, reason: str) -> None:
        future = self.answers.get(expired.context)
        if future is not None and not future.done():
            future.set_exception(TimeoutError(reason))

    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None:
        if getattr(pdu, "RESPONSE", None) is None:
            return
        if not hasattr(pdu, "esm_class") or kind_of(pdu) is not InboxKind.RECEIPT:
            self.others.append("an MO")  # not for us: the SMSC delivers it again
            conn.respond(pdu.make_resp(command_status=CommandStatus.ESME_RX_T_APPN))
            return
        self.held.append(_Arrived(conn, pdu, self._loop.time()))
        self._sort()

    def know(self, ack_id: str, rules: ReceiptRules, spent: Sequence[str] = ()) -> None:
        """The test MT's id is known: sort the receipts held so far. Receipts of `spent`
        test MTs (ids that could not tell hex from decimal) are acknowledged and dropped."""
        self.ack_id, self._rules, self.spent = ack_id, rules, tuple(spent)
        self._sort()

    def _sort(self) -> None:
        if self.ack_id is None or self._rules is None:
            return
        held, self.held = self.held, []
        for item in held:
            conn = item.conn
            assert conn is not None  # the probe's receipts all came over its binds
            ids = _receipt_ids(item.pdu, self._rules)
            if any(ids_related(self.ack_id, i) for i in ids):
                conn.respond(item.pdu.make_resp())
                self.ours.append(item)
                self.arrived.set()
            elif any(i in self.spent for i in ids):
                conn.respond(item.pdu.make_resp())  # an earlier test MT's: done with
            else:
                self.others.append(", ".join(ids) or "no id")
                conn.respond(item.pdu.make_resp(command_status=CommandStatus.ESME_RX_T_APPN))

    def release(self) -> None:
        """Hand back what is still held (the SMSC delivers it again)."""
        for item in self.held:
            if item.conn is not None:
                item.conn.respond(item.pdu.make_resp(command_status=CommandStatus.ESME_RX_T_APPN))
        self.held = []


def _short_message(pdu: Pdu) -> bytes | str:
    return getattr(pdu, "short_message", b"") or b""


def _receipt_ids(pdu: Pdu, rules: ReceiptRules) -> list[str]:
    """Every id a receipt carries: the account regex's, the default regex's, the TLV's."""
    ids: list[str] = []
    default = ReceiptRules.build("probe", id_in_optional_fields=False)
    for r in (rules, default):
        raw = interpret(_short_message(pdu), _without_receipted(pdu.tlvs, r), r).raw_id
        if raw and raw not in ids:
            ids.append(raw)
    tlv = _receipted(pdu.tlvs)
    if tlv and tlv not in ids:
        ids.append(tlv)
    return ids


StepCallback = Callable[[Step], None]
NoteCallback = Callable[[str], None]


async def run_check(
    account: Account,
    to: str,
    *,
    text: str = DEFAULT_TEXT,
    wait: float = DEFAULT_WAIT,
    on_step: StepCallback | None = None,
    on_note: NoteCallback | None = None,
    slots: TestSlots | None = None,
    database_dsn: str | None = None,
) -> Report:
    """Bind, send one MT, wait for its receipt and read it; every step into the report.

    With `database_dsn`, the receipt is also looked for where the SMS process stores it.

    With `slots` (the account has max_binds and a database), every test bind on the
    account's login first takes a bind slot: the check never exceeds the contract, and
    when the running services hold every slot it says so instead of binding.
    """
    report = Report(account.name, to)

    def add(step: Step) -> Step:
        report.steps.append(step)
        if on_step is not None:
            on_step(step)
        return step

    def note(message: str) -> None:
        if on_note is not None:
            on_note(message)

    smsc = account.smsc
    rules = receipt_rules(account)
    current = (smsc.mt_ack_id_format, smsc.sr_id_format)
    add(_settings_step(account))

    # --- the MT, built before binding: an unencodable text needs no SMSC to fail --------
    builder = MtBuilder(account)
    reference = int(time.time()) & 0xFFFF
    try:
        pdus = builder.build(reference, to, text, DeliveryOptions(id=0, max_parts=255))
        encoded = encode_message(
            text,
            builder.mapping,
            transliterate=builder.transliterate,
            message_payload=builder.message_payload,
            max_parts=255,
        )
    except TextError as error:
        add(
            Step(
                "build MT",
                FAIL,
                f"the test text cannot be sent with this account's encodings: {error}",
                fixes=[
                    "smsc.encoding_mapping (add ucs2, data_coding 8), or "
                    "channel.transliteration: true, or another --text"
                ],
            )
        )
        return report

    # --- binds ---------------------------------------------------------------------------
    if account.connection.mode is Mode.TRX:
        wanted = [("transceiver", bind_settings(account, BindKind.TRANSCEIVER), "connection")]
    else:
        rx_prefix = "receiver" if account.receiver is not None else "connection"
        wanted = [
            ("transmitter", bind_settings(account, BindKind.TRANSMITTER), "connection"),
            ("receiver", receiver_settings(account), rx_prefix),
        ]
    if slots is not None:
        login = (account.connection.server, account.connection.port, account.connection.system_id)
        counted = sum((s.host, s.port, s.system_id) == login for _, s, _ in wanted)
        try:
            refused = await slots.take(counted)
        except psycopg.Error as error:
            refused = f"the database that holds the bind slots is unreachable: {error}"
        if refused is not None:
            fixes = [
                "run the check while the MTA (or the SMS process) is stopped",
                "throughput.max_binds, if the contract allows more binds",
            ]
            add(Step("bind slots", FAIL, refused, fixes=fixes))
            return report
        add(Step("bind slots", PASS, f"{counted} of max_binds {account.throughput.max_binds}"))
    try:
        return await _bind_and_check(
            report, add, note, account, rules, current, wanted, pdus, encoded, wait, database_dsn
        )
    finally:
        if slots is not None:
            await slots.release()


async def _bind_and_check(
    report: Report,
    add: Callable[[Step], Step],
    note: NoteCallback,
    account: Account,
    rules: ReceiptRules,
    current: tuple[IdFormat, IdFormat],
    wanted: list[tuple[str, BindSettings, str]],
    pdus: Any,
    encoded: Any,
    wait: float,
    database_dsn: str | None = None,
) -> Report:
    """Open the test binds, then send and read (run_check's second half)."""
    probe = _Probe()
    note("binding " + " and ".join(kind for kind, _, _ in wanted) + " ...")
    results = await asyncio.gather(
        *(connect(settings, probe) for _, settings, _ in wanted), return_exceptions=True
    )
    conns: list[SmppConnection] = []
    failed = False
    for (kind, settings, prefix), result in zip(wanted, results, strict=True):
        details = [
            ("server", f"{settings.host}:{settings.port}{' (tls)' if settings.tls else ''}"),
            ("system_id", settings.system_id),
            ("system_type", settings.system_type or "(empty)"),
        ]
        if isinstance(result, SmppConnection):
            conns.append(result)
            add(Step(f"bind {kind}", PASS, f"bound as {kind}", details))
        else:
            assert isinstance(result, BaseException)
            if not isinstance(result, Exception):
                raise result
            failed = True
            said, fixes = bind_advice(result, prefix, settings)
            add(Step(f"bind {kind}", FAIL, said, details, [f"check {fix}" for fix in fixes]))
    try:
        if failed:
            return report
        await _send_and_read(
            report,
            add,
            note,
            account,
            rules,
            current,
            probe,
            conns,
            pdus,
            encoded,
            wait,
            database_dsn,
        )
        return report
    finally:
        probe.release()
        await _close(conns)


async def _close(conns: list[SmppConnection]) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.unbind()
        conn.close("go-live check done")
    for conn in conns:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(conn.closed), 2.0)


def _settings_step(account: Account) -> Step:
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


async def _send_and_read(
    report: Report,
    add: Callable[[Step], Step],
    note: NoteCallback,
    account: Account,
    rules: ReceiptRules,
    current: tuple[IdFormat, IdFormat],
    probe: _Probe,
    conns: list[SmppConnection],
    pdus: tuple[Pdu, ...],
    encoded: Any,
    wait: float,
    database_dsn: str | None = None,
) -> None:
    stored = _Stored(database_dsn, account.name) if database_dsn else None
    if stored is not None:
        await stored.open()  # before the MT: its clock marks where to look from
    try:
        await _send_and_wait(
            report, add, note, account, rules, current, probe, conns, pdus, encoded, wait, stored
        )
    finally:
        if stored is not None:
            await stored.close()


async def _send_and_wait(
    report: Report,
    add: Callable[[Step], Step],
    note: NoteCallback,
    account: Account,
    rules: ReceiptRules,
    current: tuple[IdFormat, IdFormat],
    probe: _Probe,
    conns: list[SmppConnection],
    pdus: tuple[Pdu, ...],
    encoded: Any,
    wait: float,
    stored: _Stored | None,
) -> None:
    smsc = account.smsc
    loop = asyncio.get_running_loop()
    sender = conns[0]
    details = [
        ("to", pdus[0].destination_addr),
        ("from", pdus[0].source_addr or "(empty: the SMSC's default)"),
        ("text", encoded.sent_text),
        ("encoding", f"{encoded.encoding} (data_coding {encoded.data_coding})"),
        ("parts", str(len(pdus))),
        ("registered_delivery", str(pdus[0].registered_delivery)),
    ]
    acks: list[str] = []
    while True:  # one test MT; more while its id cannot tell hex from decimal ids apart
        base = len(acks) * len(pdus)
        answers = [probe.expect(base + index) for index in range(len(pdus))]
        sent_at = loop.time()
        for index, pdu in enumerate(pdus):
            sender.submit(pdu, base + index)
        try:
            resp = await answers[0]
            for other in answers[1:]:
                await other
        except (TimeoutError, ConnectionError) as error:
            add(
                Step(
                    "submit",
                    FAIL,
                    f"no submit_sm_resp ({error}) within throughput.mt_timeout "
                    f"({account.throughput.mt_timeout:g} s)",
                    details,
                    ["ask the provider why the MT gets no answer; check throughput.mt_timeout"],
                )
            )
            return
        bad = [a.result() for a in answers if a.result().command_status != 0]
        if bad:
            status = bad[0].command_status
            add(
                Step(
                    "submit",
                    FAIL,
                    f"the SMSC refused the MT: {status_name(status)} (0x{status:08X})",
                    details,
                    [f"check {fix}" for fix in submit_advice(status)],
                )
            )
            return
        acks.append(resp.message_id)
        if len(acks) >= MAX_TEST_MTS or not hex_or_decimal_alike(resp.message_id):
            break
        note(
            f"message_id {resp.message_id!r} reads the same in decimal and hex: "
            "another test MT, to tell them apart"
        )
    ack_raw = acks[-1]
    details.append(("answered in", f"{(loop.time() - sent_at) * 1000:.0f} ms"))
    if len(acks) > 1:
        details.append(
            (
                "test MTs",
                f"{len(acks)}: message ids {', '.join(map(repr, acks[:-1]))} read the same in "
                "decimal and hex, so the check sent MTs until one told them apart",
            )
        )
    add(Step("submit", PASS, "submit_sm accepted (ESME_ROK)", details))

    # --- MT-ack id ----------------------------------------------------------------------
    ack_details = [
        ("message_id (raw)", repr(ack_raw)),
        ("mt_ack_id_format", smsc.mt_ack_id_format.value),
    ]
    try:
        ack_id: str | None = format_id(ack_raw, smsc.mt_ack_id_format)
        ack_details.append(("provider_msg_id", repr(ack_id)))
        add(Step("MT-ack id", PASS, f"provider_msg_id {ack_id!r}", ack_details))
    except ValueError as error:
        ack_id = None
        add(Step("MT-ack id", FAIL, str(error), ack_details, ["see the id match step"]))
    probe.know(ack_raw, rules, spent=acks[:-1])

    # --- the receipt ----------------------------------------------------------------------
    note(f"waiting up to {wait:g} s for the receipt of {ack_raw!r} ...")
    deadline = loop.time() + wait
    chosen: tuple[_Arrived, Receipt] | None = None
    intermediate: list[Receipt] = []
    candidates: list[_Arrived] = []  # ours: from the check's bind or the SMS process's store
    taken = seen = 0
    while chosen is None:
        candidates.extend(probe.ours[taken:])
        taken = len(probe.ours)
        if stored is not None:
            candidates.extend(await stored.related(ack_raw, rules, loop.time()))
        while seen < len(candidates):
            item = candidates[seen]
            seen += 1
            receipt = interpret(_short_message(item.pdu), item.pdu.tlvs, rules)
            if receipt.outcome is Outcome.INTERMEDIATE:
                intermediate.append(receipt)
                note(f"intermediate receipt: stat {receipt.stat}")
                if not _looks_final(receipt.stat):
                    continue
            chosen = (item, receipt)
            break
        if chosen is not None:
            break
        left = deadline - loop.time()
        if left <= 0:
            break
        probe.arrived.clear()
        if len(probe.ours) > taken:
            continue  # arrived while the database was read
        with contextlib.suppress(TimeoutError):  # the database is read twice a second
            await asyncio.wait_for(probe.arrived.wait(), left if stored is None else min(left, 0.5))
    if chosen is None and intermediate:
        last = candidates[-1]
        chosen = (last, interpret(_short_message(last.pdu), last.pdu.tlvs, rules))
    if chosen is None:
        fixes = [
            "the test MT asked for a receipt (registered_delivery 1): check the provider's "
            "delivery-receipt (DLR) settings for this system_id",
            "the receiver bind: receiver.* settings (or connection.* without a receiver "
            "section), and that the provider routes receipts to it",
            f"receipts may just be slow: raise --wait (was {wait:g} s)",
        ]
        others = [o for o in probe.others if o != "an MO"]
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
        if stored is not None and stored.problem:
            extra.append(("SMS process's receipts", f"not looked at: {stored.problem}"))
        add(Step("receipt", FAIL, summary, extra, fixes))
        return

    item, receipt = chosen
    pdu = item.pdu
    tlv_id = _receipted(pdu.tlvs)
    state = pdu.tlv(0x0427)
    rec_details = [
        ("arrived after", f"{item.at - sent_at:.1f} s"),
        ("found in", item.where),
        ("text", receipt.text),
        ("receipted_message_id", repr(tlv_id) if tlv_id is not None else "(absent)"),
        ("message_state", str(state) if state is not None else "(absent)"),
    ]
    summary = "receipt received"
    if item.conn is None:
        summary = f"receipt received by the running SMS process, read from {item.where}"
        rec_details.append(
            (
                "note",
                "the SMS process finds no MT for it (the check's MT is not recorded) and "
                "keeps it as unmatched after sms_process.receipt_match_wait",
            )
        )
    add(Step("receipt", PASS, summary, rec_details))

    _id_steps(add, account, rules, current, pdu, receipt, ack_raw, ack_id, tlv_id)
    _agreement_step(add, rules, current, pdu, receipt, tlv_id)
    _stat_step(add, rules, receipt, intermediate, wait)
    _echo_step(add, encoded, receipt)


def _looks_final(stat: str | None) -> bool:
    """A stat that a provider means as final though the account's regexes call it other."""
    word = (stat or "").upper()
    return word not in {"", "ENROUTE", "ACCEPTD", "ACCEPTED", "BUFFRED", "BUFFERED", "SCHEDULED"}


def _id_steps(
    add: Callable[[Step], Step],
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
    short_message = _short_message(pdu)
    by_regex = interpret(short_message, _without_receipted(pdu.tlvs, rules), rules)
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
                    [f"set smsc.sr_id_regex: {_yaml_quote(suggestion)}"],
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
                f"set smsc.sr_id_regex: {_yaml_quote(suggestion)}"
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
        ("MT-ack id", f"{ack_raw!r} -> {_shown(ack_id)}"),
        (
            "SR id",
            f"{sr_raw!r} -> {_shown(receipt.provider_id)}" if sr_raw is not None else "(none)",
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
                fixes.append(f"set smsc.sr_id_regex: {_yaml_quote(suggestion)}")
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


def _agreement_step(
    add: Callable[[Step], Step],
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
    by_regex = interpret(_short_message(pdu), _without_receipted(pdu.tlvs, rules), rules)
    text_raw = by_regex.raw_id
    if text_raw is None:
        return  # no text id: the SR id step says so
    name = "text id vs receipted_message_id"
    details = [
        ("text id", f"{text_raw!r} -> {_shown(by_regex.provider_id)}"),
        ("receipted_message_id", f"{tlv_id!r} -> {_shown(_try_format(tlv_id, current[0]))}"),
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


def _stat_step(
    add: Callable[[Step], Step],
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
    elif _looks_final(receipt.stat):
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


def _echo_step(add: Callable[[Step], Step], encoded: Any, receipt: Receipt) -> None:
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


def _shown(canonical: str | None) -> str:
    """An id after its format, or `?` when the format cannot read it."""
    return "?" if canonical is None else repr(canonical)


def _yaml_quote(text: str) -> str:
    """A regex as a single-quoted YAML scalar (backslashes need no escaping there)."""
    return "'" + text.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

_MARKS = {PASS: ("PASS", "green"), FAIL: ("FAIL", "bold red"), SKIP: ("SKIP", "yellow")}


def render_step(step: Step) -> Any:
    """A step as rich renderables (plain text when the console is not a terminal)."""
    from rich.text import Text

    label, style = _MARKS[step.status]
    out = Text()
    out.append(f"[{label}] ", style=style)
    out.append(step.name, style="bold")
    out.append(f": {step.summary}\n")
    for key, value in step.details:
        out.append(f"    {key}: ", style="dim")
        out.append(f"{value}\n")
    for fix in step.fixes:
        out.append("    -> ", style="bold yellow")
        out.append(f"{fix}\n", style="yellow")
    out.rstrip()
    return out


def run_command(
    config_path: str, name: str, to: str, *, wait: float, text: str, as_json: bool
) -> int:
    """What `smsmta account test` does; returns the exit code (0 ok, 1 failed, 2 bad input)."""
    import json
    import sys

    import uvloop
    from rich.console import Console

    from smsmta import obs, settings

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        cfg = settings.load(config_path)
    except settings.ConfigError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        return 2
    if not isinstance(cfg, settings.MidConfig):
        err.print(f"{config_path}: the go-live check needs a 'kind: mid' settings file")
        return 2
    try:
        account = cfg.account(name)
    except KeyError:
        names = ", ".join(a.name for a in cfg.accounts) or "none"
        err.print(f"no mid account {name!r} in {config_path} (accounts: {names})", markup=False)
        return 2
    if not to.strip() or not re.fullmatch(r"\+?[0-9 ]{3,20}", to.strip()):
        err.print(f"--to {to!r}: give a phone number (MSISDN), e.g. +33612345678", markup=False)
        return 2
    obs.configure_logging("account-test", "error", "console", cache=False)
    slots = None
    url = settings.database_url(cfg)
    if account.throughput.max_binds and url:  # every test bind takes one of the slots
        from smsmta.db.engine import libpq_dsn

        slots = TestSlots(libpq_dsn(url), account, cfg.host_id, ttl=wait + 60.0)
    database_dsn = None
    if url:  # the receipt may reach the running SMS process's bind: look where it stores it
        from smsmta.db.engine import libpq_dsn as to_dsn

        database_dsn = to_dsn(url)
    out = Console(highlight=False, soft_wrap=True)
    if as_json:
        report = uvloop.run(
            run_check(
                account, to.strip(), text=text, wait=wait, slots=slots, database_dsn=database_dsn
            )
        )
        json.dump(report.as_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:

        def step(s: Step) -> None:
            out.print(render_step(s))

        def note(message: str) -> None:
            out.print(f"  ... {message}", style="dim", markup=False)

        report = uvloop.run(
            run_check(
                account,
                to.strip(),
                text=text,
                wait=wait,
                on_step=step,
                on_note=note,
                slots=slots,
                database_dsn=database_dsn,
            )
        )
        out.print(render_summary(report))
    return 0 if report.ok else 1


def render_summary(report: Report) -> Any:
    from rich.text import Text

    failed = [s.name for s in report.steps if s.status == FAIL]
    if not failed:
        return Text(f"go-live check of {report.account}: every step passed", style="bold green")
    return Text(
        f"go-live check of {report.account}: FAILED at {', '.join(failed)}", style="bold red"
    )
