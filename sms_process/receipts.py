"""Receipt reconciliation: inbox receipts -> their MT's final status, in one transaction a batch.

What it does (SPEC section 7), for a batch of `mid.inbox` receipt rows:

1. reads each receipt with its account's `ReceiptRules` (smsmta.smpp.receipt.interpret: id regex,
   SR id format, TLV and Text options; receipted_message_id with the MT-ack id format);
2. matches the ids to `mid.provider_msg_id` of the same account (the newest row when a
   provider reuses ids), with the message and its delivery, in one query that locks the
   messages (in id order), so concurrent batches touching one message take turns;
3. decides, per receipt, in arrival order (`decide` below, pure): a final stat on a `sent`
   message of the attempt the receipt belongs to changes it; anything else is history;
4. writes in the caller's transaction: the message log upserted for failures (its
   qualification decides: hard -> failed, soft -> back to the queue under `smsmta.policy`,
   ignored -> failed without counting as hard), `broad_log` updated from arrays (guarded by
   status = 'sent'), the delivery KPIs incremented when the account wants them in real
   time (else the delivery is marked for the periodic sync; last, so the delivery row is
   locked only until the commit), every receipt COPYed into
   `mid.receipt` (the message's history), handled inbox rows deleted, and receipts whose MT
   is not recorded yet left in the inbox for another try `retry_interval` later, until
   `match_wait` after their arrival: then they are kept as `unmatched`.

Which attempt: the MTA writes a part's provider_msg_id and the message's `sent_at` in one
transaction (same now()), so a receipt whose provider_msg_id is older than `sent_at`
belongs to an earlier attempt of a message sent again after a soft failure: ignored.

Multipart: every part's receipt is kept. `first_part`: part 1's receipt decides (Adobe's
rule; the MTA asks a receipt for the first part only). `all_parts`: a failed part fails the
message; it is delivered when every part has a delivered receipt of the current attempt.

Text id vs receipted_message_id: when both are present and disagree once formatted, the TLV
decides (smsmta.smpp.receipt). Each such receipt is counted (`smsmta_receipt_id_disagreements`, by
account) and the first one of each account is logged once in the process's life, as a
warning naming the setting that would make the two agree (`id_disagreement_fix`): a
misconfiguration, not an outage, so one line is enough and the counter tells how many.

Touches: the database through the caller's connection and transaction (`mid.inbox`,
`mid.provider_msg_id`, `mid.broad_log`, `mid.delivery`, `mid.broad_log_msg`,
`mid.receipt`); the id-disagreement counter and log line above; other metrics are the
caller's, from `BatchOutcome`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from smsmta import message_log, obs
from smsmta.db import FailureType, ReceiptResult
from smsmta.policy import RetryPolicy, Verdict
from smsmta.settings import Account
from smsmta.smpp import codec
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.receipt import Outcome, Receipt, ReceiptRules, id_disagreement_fix, interpret

log = structlog.get_logger("sms_process.receipts")


@dataclass(frozen=True)
class AccountRules:
    """What reconciliation needs of one account."""

    account_id: int
    name: str
    rules: ReceiptRules
    realtime_kpi: bool

    @classmethod
    def of(cls, account_id: int, account: Account) -> AccountRules:
        smsc = account.smsc
        rules = ReceiptRules.build(
            account.connection.smsc_name,
            id_regex=smsc.sr_id_regex,
            success_regex=smsc.sr_success_regex,
            error_regex=smsc.sr_error_regex,
            sr_id_format=smsc.sr_id_format,
            mt_ack_id_format=smsc.mt_ack_id_format,
            id_in_optional_fields=smsc.sr_id_in_optional_fields,
            id_in_text_field=smsc.sr_id_in_text_field,
        )
        return cls(account_id, account.name, rules, account.channel.realtime_kpi)


# An account that left the settings file: its receipts are still read, with the defaults.
def _fallback(account_id: int) -> AccountRules:
    return AccountRules(account_id, f"#{account_id}", ReceiptRules.build("unknown"), True)


@dataclass(slots=True)
class InboxRow:
    id: int
    account_id: int
    pdu: bytes
    received_at: datetime
    attempts: int
    #: the same PDU as the receiver decoded it, when this process stored the row
    decoded: Pdu | None = None


@dataclass(slots=True)
class Match:
    """The MT part a receipt's id names, and its message as read in this transaction."""

    broad_log_id: int
    part_no: int
    mt_sent_at: datetime
    status: str
    parts: int
    sent_at: datetime | None
    retry_count: int
    delivery_id: int
    validity_end: datetime

    @property
    def current_attempt(self) -> bool:
        return self.sent_at is None or self.mt_sent_at >= self.sent_at


@dataclass(slots=True)
class Handled:
    """One receipt and what became of it."""

    row: InboxRow
    account: AccountRules
    receipt: Receipt | None
    match: Match | None = None
    result: ReceiptResult | None = None  # None: waits in the inbox for its MT
    note: str | None = None
    change: str | None = None  # 'delivered' | 'failed' | 'retry': this receipt sets the status


@dataclass
class BatchOutcome:
    """What a batch did, for metrics and logs (filled by `Reconciler.handle`)."""

    handled: list[Handled] = field(default_factory=list)
    applied: list[Handled] = field(default_factory=list)
    waiting: int = 0
    dirty_deliveries: set[int] = field(default_factory=set)
    by_result: Counter[tuple[str, str]] = field(default_factory=Counter)  # (account, result)
    by_stat: Counter[tuple[str, str]] = field(default_factory=Counter)  # (account, stat)
    #: receipts whose text id receipted_message_id overruled, by account name
    id_disagreements: Counter[str] = field(default_factory=Counter)


# The messages are locked (in id order: no deadlock between two batches) and read as the
# last commit left them: a batch running beside this one (the SMS process's workers) that
# touches the same message waits for this one's commit, then sees what it did.
MATCH = """
SELECT m.ord, m.broad_log_id, m.part_no, m.created_at, b.status::text,
       b.parts, b.sent_at, b.retry_count, b.delivery_id, d.validity_end, d.created_at
FROM (SELECT DISTINCT ON (v.ord) v.ord, p.broad_log_id, p.part_no, p.created_at
      FROM unnest(%b::int[], %b::text[]) WITH ORDINALITY AS v(account_id, provider_id, ord)
      JOIN mid.provider_msg_id p
        ON p.account_id = v.account_id AND p.provider_id = v.provider_id
      ORDER BY v.ord, p.created_at DESC) AS m
JOIN mid.broad_log b ON b.id = m.broad_log_id
JOIN mid.delivery d ON d.id = b.delivery_id
ORDER BY b.id
FOR UPDATE OF b
"""

PART_RECEIPTS = """
SELECT r.broad_log_id, r.part_no, r.outcome::text
FROM mid.receipt r JOIN mid.broad_log b ON b.id = r.broad_log_id
WHERE r.broad_log_id = ANY(%b) AND r.result = 'part' AND r.mt_sent_at >= b.sent_at
"""


DELIVERED = """
UPDATE mid.broad_log b SET status = 'delivered', final_at = now(), updated_at = now()
FROM unnest(%b::bigint[]) AS v(id)
WHERE b.id = v.id AND b.status = 'sent'
RETURNING b.id
"""

FAILED = """
UPDATE mid.broad_log b
SET status = 'failed', failure_type = v.type::mid.failure_type, failure_reason = v.reason,
    broad_log_msg_id = v.msg, final_at = now(), updated_at = now()
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::bigint[]) AS v(id, type, reason, msg)
WHERE b.id = v.id AND b.status = 'sent'
RETURNING b.id
"""

RETRY = """
UPDATE mid.broad_log b
SET status = 'pending', next_try_at = v.at, retry_count = b.retry_count + 1,
    failure_type = 'soft', failure_reason = v.reason, broad_log_msg_id = v.msg,
    updated_at = now()
FROM unnest(%b::bigint[], %b::timestamptz[], %b::text[], %b::bigint[]) AS v(id, at, reason, msg)
WHERE b.id = v.id AND b.status = 'sent'
RETURNING b.id
"""

KPIS = """
UPDATE mid.delivery d
SET delivered = d.delivered + v.delivered, failed_hard = d.failed_hard + v.hard,
    failed_soft = d.failed_soft + v.soft, updated_at = now()
FROM unnest(%b::bigint[], %b::int[], %b::int[], %b::int[]) AS v(id, delivered, hard, soft)
WHERE d.id = v.id
"""

COPY_RECEIPTS = (
    "COPY mid.receipt (account_id, provider_id, broad_log_id, part_no, mt_sent_at, stat, err, "
    "outcome, result, text, note, received_at) FROM STDIN (FORMAT BINARY)"
)
# binary COPY: no text escaping of each value; enums travel as their labels' text
RECEIPT_TYPES = (
    "int4", "text", "int8", "int2", "timestamptz", "text", "text", "text", "text", "text",
    "text", "timestamptz",
)  # fmt: skip

DELETE_INBOX = "DELETE FROM mid.inbox WHERE id = ANY(%b)"

WAIT_INBOX = """
UPDATE mid.inbox SET attempts = attempts + 1, next_try_at = %b WHERE id = ANY(%b)
"""

_FINAL_STATUSES = frozenset({"delivered", "failed", "no_receipt"})


def _receipt_of(row: InboxRow, account: AccountRules) -> tuple[Receipt | None, str | None]:
    pdu = row.decoded
    if pdu is None:
        try:
            pdu = codec.decode(row.pdu)
        except RemoteProtocolError as error:  # cannot happen with rows the Inbox wrote
            return None, f"undecodable PDU: {error}"
    short_message = getattr(pdu, "short_message", b"")  # data_sm has none: payload TLV
    return interpret(short_message, pdu.tlvs, account.rules), None


class Reconciler:
    """Handles batches of inbox receipts; holds the per-account rules and the policies."""

    def __init__(
        self,
        accounts: Mapping[int, AccountRules],
        policy: RetryPolicy,
        *,
        match_wait: float = 600.0,
        retry_interval: float = 5.0,
        multipart_status: str = "first_part",
    ) -> None:
        self.accounts = dict(accounts)
        self.policy = policy
        self.match_wait = timedelta(seconds=match_wait)
        self.retry_interval = timedelta(seconds=retry_interval)
        self.all_parts = multipart_status == "all_parts"
        self._disagreement_logged: set[int] = set()  # account ids already logged

    def account(self, account_id: int) -> AccountRules:
        found = self.accounts.get(account_id)
        if found is None:
            found = self.accounts[account_id] = _fallback(account_id)
        return found

    async def handle(
        self, conn: psycopg.AsyncConnection, rows: Iterable[InboxRow], now: datetime | None = None
    ) -> BatchOutcome:
        """Reconcile a batch inside the caller's transaction (see the module docstring)."""
        now = now or datetime.now(UTC)
        out = BatchOutcome()
        items: list[Handled] = []
        for row in rows:
            account = self.account(row.account_id)
            receipt, problem = _receipt_of(row, account)
            item = Handled(row, account, receipt)
            if receipt is None or receipt.provider_id is None:
                item.result = ReceiptResult.INVALID
                item.note = problem or (receipt.id_error if receipt else None)
            elif receipt.overruled_text_id is not None:
                self._disagreement(account, receipt)
            items.append(item)
        out.handled = items

        await self._match(conn, items)
        part_state = await self._part_state(conn, items) if self.all_parts else {}
        decide(items, self.all_parts, part_state)
        for item in items:
            expired = item.row.received_at + self.match_wait <= now
            if item.result is None and item.match is None and expired:
                assert item.receipt is not None
                item.result = ReceiptResult.UNMATCHED
                item.note = f"no MT with provider id {item.receipt.provider_id!r}"
        kpi = await self._apply(conn, items, now, out)
        await self._write_history(conn, items)

        done = [item.row.id for item in items if item.result is not None]
        waiting = [item.row.id for item in items if item.result is None]
        if done:
            await conn.execute(DELETE_INBOX, (done,))
        if waiting:
            await conn.execute(WAIT_INBOX, (now + self.retry_interval, waiting))
        if kpi:  # last: the delivery row stays locked only until the commit that follows
            ids = sorted(kpi)
            await conn.execute(
                KPIS,
                (ids, [kpi[i][0] for i in ids], [kpi[i][1] for i in ids], [kpi[i][2] for i in ids]),
            )
        out.waiting = len(waiting)
        for item in items:
            if item.result is not None:
                out.by_result[(item.account.name, item.result.value)] += 1
                stat = (item.receipt.stat if item.receipt else None) or "-"
                out.by_stat[(item.account.name, stat)] += 1
                if item.receipt is not None and item.receipt.overruled_text_id is not None:
                    out.id_disagreements[item.account.name] += 1
        # counted once a receipt is done with, not at each try of one waiting for its MT
        for name, n in out.id_disagreements.items():
            obs.SP_RECEIPT_ID_DISAGREEMENTS.labels(name).inc(n)
        return out

    def _disagreement(self, account: AccountRules, receipt: Receipt) -> None:
        """Log the first text id / receipted_message_id disagreement of an account, once."""
        if account.account_id in self._disagreement_logged:
            return
        self._disagreement_logged.add(account.account_id)
        log.warning(
            "sms_process.receipt_id_disagreement",
            account=account.name,
            text_id=receipt.overruled_text_id,
            receipted_message_id=receipt.raw_id,
            fix=id_disagreement_fix(receipt, account.rules),
            detail="receipted_message_id decided; this is logged once per account, "
            "smsmta_receipt_id_disagreements counts them all",
        )

    async def _match(self, conn: psycopg.AsyncConnection, items: list[Handled]) -> None:
        wanted = [item for item in items if item.result is None and item.receipt is not None]
        if not wanted:
            return
        accounts = [item.row.account_id for item in wanted]
        ids = [item.receipt.provider_id for item in wanted]  # type: ignore[union-attr]
        # binary results: timestamps arrive as numbers, not text to parse
        async with conn.cursor(binary=True) as cursor:
            await cursor.execute(MATCH, (accounts, ids))
            rows = await cursor.fetchall()
        validity: dict[tuple[Any, Any], datetime] = {}  # per delivery, computed once
        for row in rows:
            ord_, blid, part_no, mt_sent_at, status, parts, sent_at, retries, delivery_id = row[:9]
            validity_end = validity.get(row[9:11])
            if validity_end is None:
                validity_end = validity[row[9:11]] = self.policy.validity_end(row[9], row[10])
            wanted[ord_ - 1].match = Match(
                blid,
                part_no,
                mt_sent_at,
                status,
                parts,
                sent_at,
                retries,
                delivery_id,
                validity_end,
            )

    async def _part_state(
        self, conn: psycopg.AsyncConnection, items: list[Handled]
    ) -> dict[int, dict[int, str]]:
        """For all_parts: outcome by part already recorded, of multipart messages in the batch."""
        ids = sorted(
            {i.match.broad_log_id for i in items if i.match is not None and i.match.parts > 1}
        )
        state: dict[int, dict[int, str]] = defaultdict(dict)
        if ids:
            cursor = await conn.execute(PART_RECEIPTS, (ids,))
            for broad_log_id, part_no, outcome in await cursor.fetchall():
                state[broad_log_id][part_no] = outcome
        return state

    async def _apply(
        self, conn: psycopg.AsyncConnection, items: list[Handled], now: datetime, out: BatchOutcome
    ) -> dict[int, list[int]]:
        """Write the status changes; return the KPI increments by delivery id."""
        kpi: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # delivered, hard, soft
        changing = [item for item in items if item.change is not None]
        if not changing:
            return kpi
        failures = [item for item in changing if item.change == "failed"]
        qualification: dict[str, tuple[int, FailureType]] = {}
        if failures:
            qualification = await message_log.record(
                conn,
                (
                    (item.receipt.log_key, item.receipt.log_text)
                    for item in failures
                    if item.receipt
                ),
            )

        delivered: list[Handled] = []
        failed: list[tuple[Handled, FailureType, str, int]] = []
        retry: list[tuple[Handled, datetime, str, int]] = []
        for item in changing:
            match = item.match
            assert match is not None and item.receipt is not None
            if item.change == "delivered":
                delivered.append(item)
                continue
            msg_id, qual = qualification[item.receipt.log_key]
            decision = self.policy.decide(qual, match.retry_count, now, match.validity_end)
            reason = obs.mask_receipt_text(item.receipt.log_text)  # the MT's start masked
            if decision.reason:
                reason = f"{reason} ({decision.reason})"
            if decision.verdict is Verdict.RETRY:
                assert decision.next_try_at is not None
                item.change = "retry"
                retry.append((item, decision.next_try_at, reason, msg_id))
            else:
                failed.append((item, decision.failure_type, reason, msg_id))

        updated: set[int] = set()
        if delivered:
            cursor = await conn.execute(DELIVERED, ([i.match.broad_log_id for i in delivered],))  # type: ignore[union-attr]
            updated.update(row[0] for row in await cursor.fetchall())
        if failed:
            cursor = await conn.execute(
                FAILED,
                (
                    [i.match.broad_log_id for i, _, _, _ in failed],  # type: ignore[union-attr]
                    [kind.value for _, kind, _, _ in failed],
                    [reason for _, _, reason, _ in failed],
                    [msg for _, _, _, msg in failed],
                ),
            )
            updated.update(row[0] for row in await cursor.fetchall())
        if retry:
            cursor = await conn.execute(
                RETRY,
                (
                    [i.match.broad_log_id for i, _, _, _ in retry],  # type: ignore[union-attr]
                    [at for _, at, _, _ in retry],
                    [reason for _, _, reason, _ in retry],
                    [msg for _, _, _, msg in retry],
                ),
            )
            updated.update(row[0] for row in await cursor.fetchall())

        failure_types = {i.match.broad_log_id: kind for i, kind, _, _ in failed}  # type: ignore[union-attr]
        for item in changing:
            match = item.match
            assert match is not None
            if match.broad_log_id not in updated:
                item.result, item.change = ReceiptResult.IGNORED, None
                item.note = "the message's status changed meanwhile"
                continue
            out.applied.append(item)
            if not item.account.realtime_kpi:
                out.dirty_deliveries.add(match.delivery_id)
            elif item.change == "delivered":
                kpi[match.delivery_id][0] += 1
            elif item.change == "failed":
                kind = failure_types[match.broad_log_id]
                if kind is FailureType.HARD:
                    kpi[match.delivery_id][1] += 1
                elif kind is FailureType.SOFT:
                    kpi[match.delivery_id][2] += 1
        return kpi

    async def _write_history(self, conn: psycopg.AsyncConnection, items: list[Handled]) -> None:
        rows: list[tuple[Any, ...]] = []
        for item in items:
            if item.result is None:
                continue
            receipt, match = item.receipt, item.match
            rows.append(
                (
                    item.row.account_id,
                    receipt.provider_id if receipt else None,
                    match.broad_log_id if match else None,
                    match.part_no if match else None,
                    match.mt_sent_at if match else None,
                    receipt.stat if receipt else None,
                    receipt.err if receipt else None,
                    receipt.outcome.value if receipt else Outcome.INTERMEDIATE.value,
                    item.result.value,
                    receipt.text if receipt else "",
                    item.note,
                    item.row.received_at,
                )
            )
        if rows:
            async with conn.cursor() as cursor, cursor.copy(COPY_RECEIPTS) as copy:
                copy.set_types(RECEIPT_TYPES)
                for values in rows:
                    await copy.write_row(values)


def decide(items: list[Handled], all_parts: bool, part_state: Mapping[int, dict[int, str]]) -> None:
    """Set `result` / `change` of every matched receipt, in arrival order. Pure.

    A receipt that changes its message makes the later ones of the same message in the
    batch duplicates; `part_state` (all_parts) is updated as parts are counted.
    """
    status_now: dict[int, str] = {}
    parts_seen: dict[int, dict[int, str]] = {k: dict(v) for k, v in part_state.items()}
    for item in items:
        match, receipt = item.match, item.receipt
        if match is None or receipt is None or item.result is not None:
            continue
        status = status_now.get(match.broad_log_id, match.status)
        if receipt.outcome is Outcome.INTERMEDIATE:
            item.result = ReceiptResult.INTERMEDIATE
            continue
        if not match.current_attempt:
            item.result = ReceiptResult.IGNORED
            item.note = "receipt of an earlier attempt of a message sent again"
            continue
        if status in _FINAL_STATUSES or (status == "pending" and match.broad_log_id in status_now):
            item.result = ReceiptResult.DUPLICATE
            continue
        if status != "sent":
            item.result = ReceiptResult.IGNORED
            item.note = f"the message is {status}"
            continue
        outcome = receipt.outcome.value  # 'delivered' | 'failed'
        if match.parts > 1 and not all_parts and match.part_no != 1:
            item.result = ReceiptResult.IGNORED
            item.note = f"part {match.part_no}: the first part's receipt decides"
            continue
        if match.parts > 1 and all_parts:
            seen = parts_seen.setdefault(match.broad_log_id, {})
            if seen.get(match.part_no) == outcome:
                item.result = ReceiptResult.DUPLICATE
                continue
            seen[match.part_no] = outcome
            delivered_parts = sum(1 for v in seen.values() if v == "delivered")
            if outcome == "delivered" and delivered_parts < match.parts:
                item.result = ReceiptResult.PART
                continue
        item.result = ReceiptResult.APPLIED
        item.change = outcome
        status_now[match.broad_log_id] = outcome if outcome == "delivered" else "pending"
