"""The go-live check's run: bind, send one test MT, wait for its receipt (`run_check`).

What it does
    `run_check(account, to, ...)` builds the test MT (an unencodable text needs no SMSC to
    fail), takes bind slots when given `slots`, opens the test binds (transmitter +
    receiver, or one transceiver in TRX mode) through `_Probe`, submits, and waits for the
    receipt on its own binds and, given `database_dsn`, where the running SMS process
    stores it (`_Stored`). What it sees goes to `smsmta.golive.steps`, which turns it into
    the report's steps, handed to `on_step` as they come; `on_note` gets progress lines.

Contract
    - Never raises on provider behaviour: bind refusals, timeouts, closed sockets, odd
      receipts all end as failed steps.
    - Ids 0 to 9 read the same in decimal and hex: while the MT-ack id is one of them,
      another test MT is sent (at most `MAX_TEST_MTS`).
    - Receipts and MOs that are not the test MT's are answered ESME_RX_T_APPN (the SMSC
      delivers them again, to the SMS process's binds); the test's own receipt ESME_ROK.
    - Every test bind on the account's login first takes a bind slot when `slots` is
      given; when the running services hold them all, the check fails saying so.
    - The database is only read (`mid.inbox`, `mid.receipt`); an error there ends the
      look-up and is named in the receipt step, it never raises.

What it touches
    SMPP sockets to the account's SMSC (smsmta.smpp.aio: one-shot `connect`, no
    reconnect), the event loop's clock, the wall clock (the MT's reference); with `slots`
    the bind slots (`mid.mta_lease`, `mid.bind_slot`); with `database_dsn`, reads of
    `mid.external_account`, `mid.inbox` and `mid.receipt`. From the services it uses the
    MTA's MT builder (`mta.submit.MtBuilder`, `DeliveryOptions`), the SMS process's receipt
    rules (`smsmta.policy.AccountRules`) and the inbox's `kind_of`, so that it
    sends and reads exactly as they do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from mta.submit import DeliveryOptions, MtBuilder
from smsmta.binds import TestSlots, bind_settings, receiver_settings
from smsmta.db import InboxKind
from smsmta.golive import steps
from smsmta.golive.diagnosis import (
    FAIL,
    MAX_TEST_MTS,
    PASS,
    Report,
    Step,
    bind_advice,
    hex_or_decimal_alike,
    ids_related,
    looks_final,
    receipt_ids,
    receipted_id,
    short_message_of,
)
from smsmta.policy import AccountRules
from smsmta.queue.inbox import kind_of
from smsmta.settings import Account, Mode
from smsmta.smpp import codec
from smsmta.smpp.aio import BaseHandler, BindKind, BindSettings, SmppConnection, connect
from smsmta.smpp.constants import CommandStatus
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import DeliverSm, Pdu
from smsmta.smpp.receipt import IdFormat, Outcome, Receipt, ReceiptRules, interpret
from smsmta.smpp.session import Expired, Response
from smsmta.smpp.text import EncodedMessage, TextError, encode_message

DEFAULT_TEXT = "smsmta go-live test"
DEFAULT_WAIT = 60.0

StepCallback = Callable[[Step], None]
NoteCallback = Callable[[str], None]


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
            ids = receipt_ids(item.pdu, rules)
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
            ids = receipt_ids(item.pdu, self._rules)
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


@dataclass
class _Run:
    """One run of the check: the account, its receipt rules, and where the steps go."""

    account: Account
    rules: ReceiptRules
    wait: float
    report: Report
    on_step: StepCallback | None
    on_note: NoteCallback | None

    @property
    def current(self) -> tuple[IdFormat, IdFormat]:
        """The account's (mt_ack_id_format, sr_id_format)."""
        return (self.account.smsc.mt_ack_id_format, self.account.smsc.sr_id_format)

    def add(self, step: Step) -> Step:
        self.report.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step

    def note(self, message: str) -> None:
        if self.on_note is not None:
            self.on_note(message)


@dataclass(frozen=True)
class _TestMt:
    """The test MT: its submit_sm PDUs and the text as encoded."""

    pdus: tuple[Pdu, ...]
    encoded: EncodedMessage


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
    run = _Run(account, receipt_rules(account), wait, Report(account.name, to), on_step, on_note)
    run.add(steps.settings_step(account))

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
        run.add(steps.build_failed_step(error))
        return run.report

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
            run.add(Step("bind slots", FAIL, refused, fixes=fixes))
            return run.report
        run.add(Step("bind slots", PASS, f"{counted} of max_binds {account.throughput.max_binds}"))
    try:
        await _bind_and_check(run, _TestMt(pdus, encoded), wanted, database_dsn)
        return run.report
    finally:
        if slots is not None:
            await slots.release()


async def _bind_and_check(
    run: _Run,
    mt: _TestMt,
    wanted: list[tuple[str, BindSettings, str]],
    database_dsn: str | None,
) -> None:
    """Open the test binds, then send and read (run_check's second half)."""
    probe = _Probe()
    run.note("binding " + " and ".join(kind for kind, _, _ in wanted) + " ...")
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
            run.add(Step(f"bind {kind}", PASS, f"bound as {kind}", details))
        else:
            assert isinstance(result, BaseException)
            if not isinstance(result, Exception):
                raise result
            failed = True
            said, fixes = bind_advice(result, prefix, settings)
            run.add(Step(f"bind {kind}", FAIL, said, details, [f"check {fix}" for fix in fixes]))
    try:
        if not failed:
            await _send_and_read(run, mt, probe, conns, database_dsn)
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


async def _send_and_read(
    run: _Run,
    mt: _TestMt,
    probe: _Probe,
    conns: list[SmppConnection],
    database_dsn: str | None,
) -> None:
    """Send the test MT over the first bind, wait for its receipt, and read it."""
    stored = _Stored(database_dsn, run.account.name) if database_dsn else None
    if stored is not None:
        await stored.open()  # before the MT: its clock marks where to look from
    try:
        submitted = await _submit(run, mt, probe, conns[0])
        if submitted is None:
            return
        acks, sent_at = submitted
        ack_raw = acks[-1]
        step, ack_id = steps.ack_step(ack_raw, run.account.smsc.mt_ack_id_format)
        run.add(step)
        probe.know(ack_raw, run.rules, spent=acks[:-1])

        run.note(f"waiting up to {run.wait:g} s for the receipt of {ack_raw!r} ...")
        chosen, intermediate = await _wait_for_receipt(run, probe, stored, ack_raw)
        if chosen is None:
            problem = stored.problem if stored is not None else None
            run.add(steps.no_receipt_step(ack_raw, run.wait, probe.others, problem))
            return
        item, receipt = chosen
        pdu, tlv_id = item.pdu, receipted_id(item.pdu.tlvs)
        after = item.at - sent_at
        run.add(steps.receipt_step(pdu, receipt, after, item.where, stored=item.conn is None))
        rules, current = run.rules, run.current
        steps.id_steps(run.add, run.account, rules, current, pdu, receipt, ack_raw, ack_id, tlv_id)
        steps.agreement_step(run.add, rules, current, pdu, receipt, tlv_id)
        steps.stat_step(run.add, rules, receipt, intermediate, run.wait)
        steps.echo_step(run.add, mt.encoded, receipt)
    finally:
        if stored is not None:
            await stored.close()


async def _submit(
    run: _Run, mt: _TestMt, probe: _Probe, sender: SmppConnection
) -> tuple[list[str], float] | None:
    """Submit the test MT, again while its id cannot tell hex from decimal ids apart.

    Returns the MT-ack ids and when the last MT went, or None when the submit failed
    (its step says why).
    """
    loop = asyncio.get_running_loop()
    pdus = mt.pdus
    details = steps.mt_details(pdus, mt.encoded)
    acks: list[str] = []
    while True:
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
            run.add(steps.no_answer_step(error, run.account.throughput.mt_timeout, details))
            return None
        bad = [a.result() for a in answers if a.result().command_status != 0]
        if bad:
            run.add(steps.refused_step(bad[0].command_status, details))
            return None
        acks.append(resp.message_id)
        if len(acks) >= MAX_TEST_MTS or not hex_or_decimal_alike(resp.message_id):
            break
        run.note(
            f"message_id {resp.message_id!r} reads the same in decimal and hex: "
            "another test MT, to tell them apart"
        )
    details.append(("answered in", f"{(loop.time() - sent_at) * 1000:.0f} ms"))
    if len(acks) > 1:
        details.append(
            (
                "test MTs",
                f"{len(acks)}: message ids {', '.join(map(repr, acks[:-1]))} read the same in "
                "decimal and hex, so the check sent MTs until one told them apart",
            )
        )
    run.add(Step("submit", PASS, "submit_sm accepted (ESME_ROK)", details))
    return acks, sent_at


async def _wait_for_receipt(
    run: _Run, probe: _Probe, stored: _Stored | None, ack_raw: str
) -> tuple[tuple[_Arrived, Receipt] | None, list[Receipt]]:
    """The test MT's final receipt (else its last intermediate one), and the intermediate
    receipts seen, waiting at most `run.wait` seconds."""
    loop = asyncio.get_running_loop()
    rules = run.rules
    deadline = loop.time() + run.wait
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
            receipt = interpret(short_message_of(item.pdu), item.pdu.tlvs, rules)
            if receipt.outcome is Outcome.INTERMEDIATE:
                intermediate.append(receipt)
                run.note(f"intermediate receipt: stat {receipt.stat}")
                if not looks_final(receipt.stat):
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
        chosen = (last, interpret(short_message_of(last.pdu), last.pdu.tlvs, rules))
    return chosen, intermediate
