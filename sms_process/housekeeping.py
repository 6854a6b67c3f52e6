"""The SMS process's housekeeping: the KPI sync, the end of the wait for receipts, the purge.

- The KPI sync (`sync_kpis`, run by the first work loop every kpi_sync_period and once at
  SIGTERM): receipts of accounts without real-time KPIs change messages but not their
  delivery's counters; they mark the delivery (`dirty`, from the reconciler's
  BatchOutcome; at start every open delivery of such accounts), and the sync recounts the
  counters of the marked deliveries from their messages (smsmta.queue.kpis.recount: the
  delivery rows are locked first, so the MTA's increments wait and none is lost), in a
  transaction that commits only while the instance's lock is held.
- Every purge_period, while the lock is held (`purge_loop`, on a connection of its own):
  the end of the wait for receipts (smsmta.queue.expiry: messages still `sent` past their
  validity + receipt_match_wait become `no_receipt`, counted and logged by account), then
  the retention purge (smsmta.queue.purge: provider_msg_id, receipt history, final
  broad_log messages whose status the marketing side has pulled, stuck inbox rows, in
  bounded batches). A run cut by a lost connection is tried again after the back-off, not
  a whole period later; one in progress when the lock is lost goes on (the owner rule,
  sms_process.lock).

Touches: the database through the queue layer (`mid.delivery`, `mid.broad_log`,
`mid.provider_msg_id`, `mid.receipt`, `mid.inbox`), the no-receipt and purge metrics,
the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping

import psycopg
import structlog

from sms_process.lock import InstanceLock, Outage
from smsmta import obs
from smsmta.queue import kpis
from smsmta.queue.expiry import close_receipts
from smsmta.queue.purge import purge
from smsmta.settings import SmsProcessService

log = structlog.get_logger("sms_process")

OPEN_DELIVERIES = """
SELECT id FROM mid.delivery WHERE account_id = ANY(%s) AND state IN ('pending', 'running', 'paused')
"""


class Housekeeping:
    """The deliveries whose KPIs wait for the sync, the sync, and the periodic purge."""

    def __init__(
        self,
        settings: SmsProcessService,
        default_validity: float,
        lock: InstanceLock,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        password: str | None,
        names: Mapping[int, str],
    ) -> None:
        self.settings = settings
        self.default_validity = default_validity
        self.lock = lock
        self.connect = connect
        self._password = password
        self.names = names
        #: deliveries whose counters wait for the KPI sync
        self.dirty: set[int] = set()

    async def mark_open_deliveries(
        self, conn: psycopg.AsyncConnection, account_ids: Iterable[int]
    ) -> None:
        """At start: every open delivery of the accounts without real-time KPIs waits for
        the sync (receipts applied before a restart may not be counted yet)."""
        slow_kpi = list(account_ids)
        if slow_kpi:
            cursor = await conn.execute(OPEN_DELIVERIES, (slow_kpi,))
            self.dirty.update(row[0] for row in await cursor.fetchall())

    async def sync_kpis(self, conn: psycopg.AsyncConnection) -> None:
        """Recount the KPIs of deliveries changed by receipts of non-real-time accounts."""
        ids = sorted(self.dirty)
        if not ids:
            return
        async with conn.transaction():
            await kpis.recount(conn, ids)  # MTA increments wait: none lost
            self.lock.check_owner()
        self.dirty.difference_update(ids)
        log.info("sms_process.kpi_synced", deliveries=len(ids))

    async def purge_loop(self) -> None:
        """A purge run every purge_period, started only while the lock is held; a run cut by
        a lost connection is tried again after the back-off, not a whole period later."""
        conn: psycopg.AsyncConnection | None = None
        outage = Outage("purge", self._password)
        while True:
            await self.lock.owner.wait()
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await self.connect()
                await self._close_receipts(conn)
                await purge(conn, self.settings)
            except psycopg.Error as error:
                if conn is None or conn.closed or conn.broken:
                    await asyncio.sleep(outage.failed(error))
                    continue
                log.warning("sms_process.purge_failed", error=str(error))
            outage.recovered()
            await asyncio.sleep(self.settings.purge_period)

    async def _close_receipts(self, conn: psycopg.AsyncConnection) -> None:
        """Messages still sent past their validity + receipt_match_wait become no_receipt."""
        for closed in await close_receipts(
            conn,
            default_validity=self.default_validity,
            wait=self.settings.receipt_match_wait,
            batch=self.settings.purge_batch,
        ):
            if closed.no_receipt:
                account = self.names.get(closed.account_id, f"#{closed.account_id}")
                obs.SP_NO_RECEIPT.labels(account).inc(closed.no_receipt)
                log.warning(
                    "sms_process.no_receipt",
                    account=account,
                    delivery=closed.delivery_id,
                    messages=closed.no_receipt,
                    why="still sent past validity + receipt_match_wait: final, no receipt",
                )
