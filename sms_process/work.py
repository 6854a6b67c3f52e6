"""The SMS process's work loops: due inbox rows, a batch per transaction, while the lock is held.

`reconcile_workers` loops, each on its own connection, take due inbox rows (`FETCH`, FOR
UPDATE SKIP LOCKED: loops take disjoint rows), a batch per transaction, back to back while
there are some (woken by NOTIFY `smsmta_inbox` and by the process's own inbox's flushes,
`wake`; else they poll every poll_interval): receipts to the reconciler
(sms_process.receipts), MOs to the MO handler (sms_process.mo). The first loop alone
takes MOs, because the MO reassembly and the auto-replies live in its memory, and runs
the KPI sync (sms_process.housekeeping) every kpi_sync_period; the others reconcile
receipts only. Two batches touching one message serialise on its broad_log row
(smsmta.queue.receipts.match), so one batch is decoded while another waits on the
database.

In each batch's transaction: the receipts reconciled, the MOs stored, and the
auto-replies stored in `mid.reply_outbox` (sms_process.replies; the MTA children send
them). The owner flag is checked just before the commit (the owner rule,
sms_process.lock): a batch in hand when the lock is lost rolls back. After each commit:
the metrics, and the deliveries whose KPIs wait for the sync handed to the housekeeping.

A lost connection is opened again once the lock is held again, and used only once the
lock's connection answered after it was opened (`InstanceLock.confirm`); each time the
lock was taken again, the first loop rebuilds the MO reassembly state from the held rows
before its next batch. Receipts this process's receivers stored are reconciled from the
PDUs they decoded (`decoded`, the inbox's cache), other rows from the stored octets.

Touches: the database (`mid.inbox`, and through the reconciler, the MO handler and
smsmta.replies the queue tables, `mid.in_sms`, `mid.reply_outbox`), the receipt and MO
metrics, the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
import structlog

from sms_process.housekeeping import Housekeeping
from sms_process.lock import InstanceLock, NotOwner, Outage
from sms_process.mo import MoHandler, ReplyLimiter
from sms_process.receipts import BatchOutcome, InboxRow, Reconciler
from sms_process.replies import outbox_reply
from smsmta import obs
from smsmta import replies as outbox
from smsmta.settings import Account, SmsProcessService
from smsmta.smpp.pdu import Pdu

log = structlog.get_logger("sms_process")

# SKIP LOCKED: the work loops (reconcile_workers) take disjoint rows; the first one takes
# MOs too (MO reassembly and auto-replies live in its memory), the others receipts only
FETCH = """
SELECT id, account_id, kind::text, pdu, received_at, attempts FROM mid.inbox
WHERE NOT held AND next_try_at <= now()
ORDER BY next_try_at, id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
FETCH_RECEIPTS = FETCH.replace("WHERE NOT held", "WHERE NOT held AND kind = 'receipt'")


class WorkLoops:
    """The work loops, their wake-ups, the MO handler and the first loop's connection."""

    def __init__(
        self,
        settings: SmsProcessService,
        lock: InstanceLock,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        password: str | None,
        reconciler: Reconciler,
        housekeeping: Housekeeping,
        enabled: Mapping[int, Account],
        names: Mapping[int, str],
    ) -> None:
        self.settings = settings
        self.lock = lock
        self.connect = connect
        self._password = password
        self.reconciler = reconciler
        self.housekeeping = housekeeping
        self.enabled = enabled
        self.names = names
        self.reply_limiter = ReplyLimiter(
            settings.reply_interval, settings.reply_limit_entries
        )  # kept across MoHandler reloads: the reply limit is per SMS process
        self.mo = self._mo_handler()
        self._mo_epoch = 0
        #: the first loop's connection (opened at start, with the lock held)
        self.conn: psycopg.AsyncConnection
        #: row id -> PDU as this process's receivers decoded it (the inbox's cache)
        self.decoded: dict[int, Pdu] = {}
        self._wakeups: list[asyncio.Event] = []  # one a work loop
        self._working = True

    def _mo_handler(self) -> MoHandler:
        return MoHandler(
            self.enabled, self.names, self.settings.mo_reassembly_timeout, self.reply_limiter
        )

    async def start(self) -> int:
        """Open the first loop's connection and load the MO reassembly state; return how
        many held MO parts it holds."""
        self.conn = await self.connect()
        held = await self.mo.reload(self.conn)
        self._mo_epoch = self.lock.epoch
        return held

    def wake(self) -> None:
        """Wake every work loop (new rows, or the lock held again)."""
        for wakeup in self._wakeups:
            wakeup.set()

    def stop(self) -> None:
        """The loops finish the batch in hand and end."""
        self._working = False
        self.wake()

    async def fresh_conn(self) -> psycopg.AsyncConnection:
        """The first loop's connection, opened again if it was lost."""
        if self.conn.closed or self.conn.broken:
            self.conn = await self.connect()
        return self.conn

    async def loop(self, worker: int = 0) -> None:
        """Batches back to back while rows are due and the lock is held. Worker 0 also does
        MOs and the KPI sync; the others (own connections) reconcile receipts while it waits
        on the database. A lost connection is opened again once the lock is held again."""
        batch = self.settings.batch_size
        next_sync = time.monotonic() + self.settings.kpi_sync_period
        wakeup = asyncio.Event()
        self._wakeups.append(wakeup)
        conn: psycopg.AsyncConnection | None = self.conn if worker == 0 else None
        confirmed = conn is not None  # the start's connection: opened with the lock held
        outage = Outage(f"work loop {worker}", self._password)
        try:
            while self._working:
                wakeup.clear()
                if not self.lock.owner.is_set():  # the owner rule (sms_process.lock)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.lock.owner.wait(), self.settings.poll_interval)
                    continue
                try:
                    if conn is None or conn.closed or conn.broken:
                        confirmed = False
                        conn = await self.connect()
                        if worker == 0:
                            self.conn = conn
                    if not confirmed:
                        await self.lock.confirm()
                        confirmed = True
                    if worker == 0 and self._mo_epoch != self.lock.epoch:
                        await self._reload_mo(conn)
                    handled = await self.work_once(conn, receipts_only=worker > 0)
                    if worker == 0 and time.monotonic() >= next_sync:
                        await self.housekeeping.sync_kpis(conn)
                        next_sync = time.monotonic() + self.settings.kpi_sync_period
                    outage.recovered()
                except NotOwner:
                    continue  # rolled back; waits for the lock above
                except psycopg.Error as error:
                    if conn is None or conn.closed or conn.broken:
                        self.lock.check_now()  # the lock's connection may be gone too
                        await asyncio.sleep(outage.failed(error))
                        continue
                    if not isinstance(error, psycopg.OperationalError):
                        raise
                    # a deadlock too: rows stay due
                    log.warning("sms_process.work_failed", error=str(error), worker=worker)
                    await asyncio.sleep(1.0)
                    continue
                if handled >= batch:
                    continue  # more are due: at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self.settings.poll_interval)
        finally:
            if worker > 0 and conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    async def _reload_mo(self, conn: psycopg.AsyncConnection) -> None:
        """The lock was taken again: MO reassembly state from the held rows, as at start."""
        epoch = self.lock.epoch  # taken again during the reload: reloaded once more
        mo = self._mo_handler()
        async with conn.transaction():
            held = await mo.reload(conn)
            self.lock.check_owner()
        self.mo = mo
        self._mo_epoch = epoch
        log.info("sms_process.mo_reloaded", held_mo_parts=held, epoch=epoch)

    async def work_once(self, conn: psycopg.AsyncConnection, receipts_only: bool = False) -> int:
        """Handle one batch of due inbox rows in one transaction; return how many."""
        started = time.monotonic()
        async with conn.transaction():
            # binary results: the PDU octets arrive as they are, not hex-escaped
            async with conn.cursor(binary=True) as cursor:
                fetch = FETCH_RECEIPTS if receipts_only else FETCH
                await cursor.execute(fetch, (self.settings.batch_size,))
                rows = await cursor.fetchall()
            decoded = self.decoded
            receipts = [
                InboxRow(r[0], r[1], r[3], r[4], r[5], decoded.pop(r[0], None))
                for r in rows
                if r[2] == "receipt"
            ]
            mos = [(r[0], r[1], r[3], r[4]) for r in rows if r[2] == "mo"]
            for row in mos:  # MOs are decoded from the table (reassembly keeps the octets)
                decoded.pop(row[0], None)
            outcome = await self.reconciler.handle(conn, receipts) if receipts else None
            mo_outcome = None
            if mos or (self.mo.pending and not receipts_only):
                mo_outcome = await self.mo.handle(conn, mos)
            if mo_outcome is not None and mo_outcome.replies:  # sent by the MTA's binds
                await outbox.store(conn, [outbox_reply(reply) for reply in mo_outcome.replies])
            self.lock.check_owner()
        committed = time.time()
        if rows:
            obs.DB_FLUSH_SECONDS.labels("sms_process").observe(time.monotonic() - started)
        if outcome is not None:
            self._receipt_metrics(outcome, committed)
        if mo_outcome is not None:
            self.mo.limiter.commit(self.names, committed)
            for name, _keyword in mo_outcome.messages:
                obs.SP_MO.labels(name).inc()
            for name, action in mo_outcome.blacklist_changes:
                obs.SP_BLACKLIST_CHANGES.labels(name, action).inc()
            for reply in mo_outcome.replies:
                obs.SP_AUTO_REPLIES.labels(self.names.get(reply.account_id, "?"), "queued").inc()
            if mo_outcome.messages:
                log.info("sms_process.mo", count=len(mo_outcome.messages), stored=mo_outcome.stored)
        return len(rows)

    def _receipt_metrics(self, outcome: BatchOutcome, committed: float) -> None:
        self.housekeeping.dirty.update(outcome.dirty_deliveries)
        for (name, result), n in outcome.by_result.items():
            obs.SP_RECEIPT_RESULTS.labels(name, result).inc(n)
            if result in ("unmatched", "invalid"):
                obs.SP_RECEIPTS_UNMATCHED.labels(name).inc(n)
        for (name, stat), n in outcome.by_stat.items():
            obs.SP_RECEIPTS.labels(name, stat).inc(n)
        matched: dict[str, int] = {}
        for item in outcome.handled:
            if item.match is not None and item.result is not None:
                matched[item.account.name] = matched.get(item.account.name, 0) + 1
        for name, n in matched.items():
            obs.SP_RECEIPTS_MATCHED.labels(name).inc(n)
        histograms: dict[str, Any] = {}  # labels() once an account, not once a receipt
        for item in outcome.applied:
            name = item.account.name
            histogram = histograms.get(name)
            if histogram is None:
                histogram = histograms[name] = obs.SP_RECEIPT_DELAY.labels(name)
            histogram.observe(max(committed - item.row.received_at.timestamp(), 0.0))
        obs.SP_RECEIPTS_WAITING.set(outcome.waiting)
        unmatched = outcome.by_result
        gave_up = sum(n for (_, r), n in unmatched.items() if r in ("unmatched", "invalid"))
        if gave_up:
            log.warning("sms_process.receipts_unmatched", count=gave_up)
