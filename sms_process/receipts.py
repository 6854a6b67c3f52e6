"""Receipt reconciliation: inbox receipts -> their MT's final status, in one transaction a batch.

What it does (SPEC section 7), for a batch of `mid.inbox` receipt rows:

1. reads each receipt with its account's `ReceiptRules` (smsmta.smpp.receipt.interpret: id regex,
   SR id format, TLV and Text options; receipted_message_id with the MT-ack id format);
2. matches the ids to `mid.provider_msg_id` of the same account (the newest row when a
   provider reuses ids), with the message and its delivery, in one query that locks the
   messages (in id order), so concurrent batches touching one message take turns
   (smsmta.queue.receipts.match);
3. decides, per receipt, in arrival order (`smsmta.policy.receipt_verdicts`, through
   `decide` below): a final stat on a `sent` message of the attempt the receipt belongs to
   changes it; anything else is history;
4. writes in the caller's transaction, through the queue layer (the statements are
   smsmta.queue.receipts's, one per kind and per batch; this module keeps the parsing,
   the policy calls and the bookkeeping): the message log upserted for failures (its
   qualification decides: hard -> failed, soft -> back to the queue under `smsmta.policy`,
   ignored -> failed without counting as hard), `broad_log` updated (guarded by
   status = 'sent'), the delivery KPIs incremented when the account wants them in real
   time (smsmta.queue.kpis says which counter; else the delivery is marked for the
   periodic sync; last, so the delivery row is locked only until the commit), every
   receipt COPYed into `mid.receipt` (the message's history), handled inbox rows deleted,
   and receipts whose MT is not recorded yet left in the inbox for another try
   `retry_interval` later, until `match_wait` after their arrival: then they are kept as
   `unmatched`.

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

Touches: the database through the caller's connection and transaction, by way of the
queue layer (smsmta.queue.receipts, kpis and message_log: `mid.inbox`,
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

from smsmta import obs
from smsmta.db import FailureType, MessageStatus, ReceiptResult
from smsmta.policy import (
    AccountRules,
    ReceiptFacts,
    RetryPolicy,
    Verdict,
    fallback_rules,
    is_current_attempt,
    receipt_verdicts,
    unmatched,
)
from smsmta.queue import kpis, message_log
from smsmta.queue import receipts as queue
from smsmta.smpp import codec
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.receipt import Outcome, Receipt, id_disagreement_fix, interpret

log = structlog.get_logger("sms_process.receipts")


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
        return is_current_attempt(self.mt_sent_at, self.sent_at)


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
            found = self.accounts[account_id] = fallback_rules(account_id)
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
            if item.result is None and item.match is None:
                assert item.receipt is not None and item.receipt.provider_id is not None
                verdict = unmatched(
                    item.receipt.provider_id, item.row.received_at, now, self.match_wait
                )
                if verdict is not None:
                    item.result, item.note = verdict.result, verdict.note
        kpi = await self._apply(conn, items, now, out)
        await self._write_history(conn, items)

        done = [item.row.id for item in items if item.result is not None]
        waiting = [item.row.id for item in items if item.result is None]
        if done:
            await queue.delete_handled(conn, done)
        if waiting:
            await queue.try_again_at(conn, waiting, now + self.retry_interval)
        # last: the delivery row stays locked only until the commit that follows
        await kpis.add_receipt_counts(conn, kpi)
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
        # every receipt still wanted has an id (one without is invalid, above)
        ids: list[str] = [item.receipt.provider_id for item in wanted]  # type: ignore[union-attr,misc]
        rows = await queue.match(conn, accounts, ids)
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
            for broad_log_id, part_no, outcome in await queue.part_outcomes(conn, ids):
                state[broad_log_id][part_no] = outcome
        return state

    async def _apply(
        self, conn: psycopg.AsyncConnection, items: list[Handled], now: datetime, out: BatchOutcome
    ) -> dict[int, Counter[str]]:
        """Write the status changes; return the KPI increments by delivery id and column."""
        kpi: dict[int, Counter[str]] = defaultdict(Counter)
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

        delivered: list[int] = []
        failed: list[queue.Failed] = []
        retry: list[queue.Retry] = []
        for item in changing:
            match = item.match
            assert match is not None and item.receipt is not None
            if item.change == "delivered":
                delivered.append(match.broad_log_id)
                continue
            msg_id, qual = qualification[item.receipt.log_key]
            decision, reason = self.policy.after_failure(
                qual,
                match.retry_count,
                now,
                match.validity_end,
                obs.mask_receipt_text(item.receipt.log_text),  # the MT's start masked
            )
            if decision.verdict is Verdict.RETRY:
                assert decision.next_try_at is not None
                item.change = "retry"
                retry.append(queue.Retry(match.broad_log_id, decision.next_try_at, reason, msg_id))
            else:
                failed.append(
                    queue.Failed(match.broad_log_id, decision.failure_type, reason, msg_id)
                )

        updated: set[int] = set()
        if delivered:
            updated |= await queue.record_delivered(conn, delivered)
        if failed:
            updated |= await queue.record_failed(conn, failed)
        if retry:
            updated |= await queue.record_retry(conn, retry)

        failure_types = {row.id: row.failure_type for row in failed}
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
            elif item.change in ("delivered", "failed"):  # a retry: counted when it ends
                status = MessageStatus(item.change)
                column = kpis.column_of(status, failure_types.get(match.broad_log_id))
                if column is not None:
                    kpi[match.delivery_id][column] += 1
        return kpi

    async def _write_history(self, conn: psycopg.AsyncConnection, items: list[Handled]) -> None:
        rows: list[queue.History] = []
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
        await queue.copy_history(conn, rows)


def decide(items: list[Handled], all_parts: bool, part_state: Mapping[int, dict[int, str]]) -> None:
    """Set `result` / `change` / `note` of every matched receipt, in arrival order.

    The verdicts are smsmta.policy's (`receipt_verdicts`); receipts already handled
    (invalid) or not matched are left alone.
    """
    todo: list[Handled] = []
    facts: list[ReceiptFacts] = []
    for item in items:
        match, receipt = item.match, item.receipt
        if match is None or receipt is None or item.result is not None:
            continue
        todo.append(item)
        facts.append(
            ReceiptFacts(
                match.broad_log_id,
                match.part_no,
                match.parts,
                match.status,
                match.current_attempt,
                receipt.outcome,
            )
        )
    for item, verdict in zip(todo, receipt_verdicts(facts, all_parts, part_state), strict=True):
        item.result, item.change = verdict.result, verdict.change
        if verdict.note is not None:
            item.note = verdict.note
