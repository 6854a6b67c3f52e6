"""The SMS process: `smsmta sms-process`, exactly one per instance (one database).

What it runs until SIGTERM:

- an advisory lock (`LOCK_KEY`) held on a connection of its own: a second SMS process
  against the same database refuses to start and names the holder (exit code 1). The lock
  watch checks that connection every LOCK_CHECK_PERIOD seconds (at once when a work
  connection fails); when it dies (a PostgreSQL restart, a terminated backend) the process
  rides through: it reconnects with a capped back-off (RECONNECT_FIRST doubling up to
  RECONNECT_MAX, one log line when the outage begins and one when it ends, never the
  DSN), takes the lock again with pg_try_advisory_lock, and exits 1 naming the holder only
  if another SMS process holds it by then;
- `connections` receiver binds per enabled TX+RX account (receiver settings), whose
  deliver_sm / data_sm go through the `Inbox` (smsmta.queue.inbox): stored, committed, then
  acknowledged. TRX accounts receive on the MTA's transceivers, into the same inbox. With
  max_binds, the receivers on the transmitter's login hold bind slots 0..r-1 under this
  process's lease (`_hold_slots`, smsmta.binds): every bind counts, and the MTA never
  takes a receiver's slot. No other bind: auto-replies go out on the MTA's binds;
- the work loops (`reconcile_workers`, each on its own connection): due inbox rows, a
  batch per transaction, back to back while there are some (woken by NOTIFY
  `smsmta_inbox` and by its own inbox's flushes, else they poll): receipts to
  `sms_process.receipts`, MOs to `sms_process.mo` (the first loop only); after each
  commit the metrics; the auto-replies are stored in `mid.reply_outbox` in the batch's
  transaction and sent by the MTA children (sms_process.replies). Loops take disjoint
  rows (SKIP LOCKED) and two batches touching one message serialise on its broad_log row
  (receipts.MATCH), so one batch is decoded while another waits on the database;
- the KPI sync of deliveries of accounts without real-time KPIs (every kpi_sync_period):
  the delivery rows are locked, then their counters recounted from broad_log;
- the purge (every purge_period): provider_msg_id, receipt history, final broad_log
  messages whose status the marketing side has pulled, and stuck inbox rows, each past its
  retention, in bounded batches with a pause between them (`purge` below);
- the LISTEN on `smsmta_inbox` and the inbox backlog gauge (every LOCK_CHECK_PERIOD);
- /metrics when the settings give a port.

Without the lock (the owner rule). What only the instance's owner may do is what a second
SMS process started meanwhile would do too, with state the database does not hold: the
MO reassembly (held parts live in the first work loop's memory: two processes would each
complete, store and answer long MOs from their own halves), the auto-replies that follow,
and the receipt, KPI and purge work that goes with them. So while the lock is not held
(`owner` clear: from the moment the lock watch or a failed work connection finds the
lock's connection dead until the lock is taken again):
- no work-loop batch and no KPI sync starts, and one in hand rolls back instead of
  committing (the owner flag is checked just before the commit; its rows were taken FOR
  UPDATE SKIP LOCKED, so until then no other process could take them either);
- a work connection opened during or after an outage is used only once the lock's
  connection answered after it was opened (a PostgreSQL restart kills both, so the lock
  was held on the same server lifetime as the connection doing the work);
- every time the lock is taken again the MO reassembly state is rebuilt from the held
  rows (`MoHandler.reload`), and the decoded-PDU cache is dropped: another process may
  have had the lock in between, and a batch rolled back may have fed parts to memory;
- the purge starts no run (a run in progress goes on: each statement is a short
  transaction that another process's purge can run beside: SKIP LOCKED or idempotent);
- the inbox keeps storing what the receivers get: writing mid.inbox is not the owner's
  (MTA children write it too). Its rule holds through the outage: a deliver_sm is answered
  only after its row is committed, so while the database is down the answers wait (the
  SMSC resends, or drops the link, on its own timeout), never an answer for a PDU not
  stored. The receivers keep their binds.
- LISTEN and the backlog gauge only read: they reconnect on their own, with the same
  back-off and outage logging, and a LISTEN that comes back wakes the work loops (a NOTIFY
  sent during the outage is gone).

SIGTERM: stop storing what arrives (unacknowledged, the SMSC sends it again), commit and
acknowledge what was stored, unbind the receivers, finish the batch in hand (its replies
are in the outbox), sync the KPIs, drop the lease (slots), release the lock, exit 0.
Touches: the database (5 + reconcile_workers connections, 7 by default: the advisory
lock, the inbox, LISTEN, the backlog gauge, the purge, and one per work loop; one more
for the bind slots' lease when an account has max_binds and receivers on its login),
`mid.reply_outbox`, SMPP sockets, signals, the metrics port.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict

from sms_process.expiry import close_receipts
from sms_process.mo import MoHandler, ReplyLimiter
from sms_process.receipts import AccountRules, BatchOutcome, InboxRow, Reconciler
from sms_process.replies import outbox_reply
from smsmta import binds, obs
from smsmta import replies as outbox
from smsmta.accounts import sync_accounts
from smsmta.binds import receiver_settings
from smsmta.policy import RetryPolicy
from smsmta.queue.inbox import NOTIFY_CHANNEL, Inbox, handle_request
from smsmta.settings import Account, MidConfig, Mode, SmsProcessService
from smsmta.smpp.aio import BaseHandler, SmppClient, SmppConnection
from smsmta.smpp.pdu import Pdu
from smsmta.systemd import Notifier, keep_alive

log = structlog.get_logger("sms_process")

#: pg advisory lock key of the instance's SMS process: "smsm" "ta" 0x0001
LOCK_KEY = 0x736D736D74610001
EXIT_OK, EXIT_FAILED = 0, 1
#: how many batches of received PDUs are kept decoded for reconciliation (Inbox.decoded)
DECODED_KEPT_BATCHES = 10
#: seconds between checks of the lock's connection (and updates of the backlog gauge)
LOCK_CHECK_PERIOD = 2.0
#: seconds a check of the lock's connection may take before it counts as dead
LOCK_CHECK_TIMEOUT = 20.0
#: reconnection back-off after losing the database: the first delay, doubled each attempt
#: up to the last (an outage of any length is ridden through, at most RECONNECT_MAX apart)
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0
#: owner names of SMS processes in mid.mta_lease (holders of the receivers' bind slots)
LEASE_PREFIX = "sms-process:"
#: seconds between renewals of that lease (it lives config.mta.lease_ttl)
SLOT_PERIOD = 1.0

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

HOLDER = """
SELECT a.application_name, host(a.client_addr), a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
"""

LOCK_DELIVERIES = "SELECT id FROM mid.delivery WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
RECOUNT = """
UPDATE mid.delivery d
SET delivered = c.delivered, failed_hard = c.hard, failed_soft = c.soft,
    no_receipt = c.no_receipt, updated_at = now()
FROM (SELECT delivery_id,
             count(*) FILTER (WHERE status = 'delivered') AS delivered,
             count(*) FILTER (WHERE status = 'no_receipt') AS no_receipt,
             count(*) FILTER (WHERE status = 'failed' AND failure_type = 'hard') AS hard,
             count(*) FILTER (WHERE status = 'failed' AND failure_type = 'soft') AS soft
      FROM mid.broad_log WHERE delivery_id = ANY(%s) GROUP BY delivery_id) AS c
WHERE d.id = c.delivery_id
"""
OPEN_DELIVERIES = """
SELECT id FROM mid.delivery WHERE account_id = ANY(%s) AND state IN ('pending', 'running', 'paused')
"""

# --- the purge (`purge` below) -----------------------------------------------------------
# Every statement deletes at most `purge_batch` rows, reached through an index, in its own
# short transaction (autocommit), then the purge sleeps `purge_pause`. The rows to delete
# are gathered first into an array (`id = ANY(ARRAY(...))`), so the delete itself goes by
# primary key whatever the planner thinks of a join with the table: the MTA's claims and
# writes and the status pull's snapshot (pg_snapshot_xmin) never wait long on it.

# provider ids first: with broad_log_retention >= provider_msg_id_retention (settings) the
# ids of a message are gone before the message, so a receipt never matches an id whose
# message was purged (it would be kept as unmatched after the match wait). By created_at
# (ix_provider_msg_id_created_at).
PURGE_PROVIDER_MSG_ID = """
DELETE FROM mid.provider_msg_id WHERE id = ANY(ARRAY(
    SELECT id FROM mid.provider_msg_id
    WHERE created_at < now() - make_interval(secs => %(retention)s)
    LIMIT %(batch)s))
"""

# the receipt history, by processed_at (ix_receipt_processed_at); the unmatched and invalid
# receipts kept for inspection (SPEC section 7) are counted as they go
PURGE_RECEIPT = """
WITH gone AS (
    DELETE FROM mid.receipt WHERE id = ANY(ARRAY(
        SELECT id FROM mid.receipt
        WHERE processed_at < now() - make_interval(secs => %(retention)s)
        LIMIT %(batch)s))
    RETURNING result
)
SELECT count(*), count(*) FILTER (WHERE result IN ('unmatched', 'invalid')) FROM gone
"""

# Final messages past their retention, walked in (final_at, id) order on the partial index
# ix_broad_log_final, `purge_batch` index entries a statement from where the previous one
# stopped (keyset: never the same entries twice in a run). A candidate is deleted unless its
# delivery was pushed through the mid API (mid.delivery_sync) and the marketing side has not
# acknowledged its status yet: pulling from a cursor acknowledges every change up to it
# (midsourcing.store.pull), so a row after `pulled_xid.pulled_id` may not have reached the
# marketing side and stays (it is looked at again at the next run). Final is terminal (every
# update out of a status is guarded by a non-final one), so no row changes under the purge;
# rows locked by a receipt being handled are skipped and purged at the next run.
PURGE_BROAD_LOG = """
WITH candidate AS (
    SELECT b.id, b.delivery_id, b.status_xid, b.final_at FROM mid.broad_log b
    WHERE b.status IN ('delivered', 'failed', 'cancelled', 'no_receipt')
      AND b.final_at < now() - make_interval(secs => %(retention)s)
      AND (b.final_at, b.id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
    ORDER BY b.final_at, b.id
    LIMIT %(batch)s
    FOR UPDATE OF b SKIP LOCKED
), gone AS (
    DELETE FROM mid.broad_log WHERE id = ANY(ARRAY(
        SELECT c.id FROM candidate c
        WHERE NOT EXISTS (
            SELECT 1 FROM mid.delivery_sync s
            WHERE s.delivery_id = c.delivery_id
              AND (c.status_xid, c.id) > (s.pulled_xid, s.pulled_id))))
    RETURNING id
), last AS (
    SELECT final_at, id FROM candidate ORDER BY final_at DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM candidate), (SELECT count(*) FROM gone),
       (SELECT final_at FROM last), (SELECT id FROM last)
"""

# Inbox rows that are stuck: a long MO's part still `held`, or a receipt tried already
# (attempts > 0), still there `inbox_retention` after it arrived (longer than the receipt
# match wait and the MO reassembly timeout: settings), which normal handling would have
# turned into an unmatched receipt or a stored MO long ago. Rows never tried (the SMS
# process was down) are left to the work loops. Ids grow with arrival, so the walk goes in
# id order (primary key: no index to maintain at receipt rate) and stops at the first batch
# that reaches rows younger than the retention. Nothing goes silently: counted by account,
# kind and held, logged, and in smsmta_purged_rows{table="inbox"}.
PURGE_INBOX = """
WITH candidate AS (
    SELECT id, account_id, kind, held, attempts, received_at FROM mid.inbox
    WHERE id > %(after_id)s
    ORDER BY id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM mid.inbox WHERE id = ANY(ARRAY(
        SELECT id FROM candidate
        WHERE (held OR attempts > 0)
          AND received_at < now() - make_interval(secs => %(retention)s)))
    RETURNING account_id, kind, held
), scanned AS (
    SELECT count(*) AS n, max(id) AS last,
           count(*) FILTER (WHERE received_at >= now() - make_interval(secs => %(retention)s))
               AS young
    FROM candidate
)
SELECT s.n, s.last, s.young, g.account_id, g.kind, g.held, g.rows
FROM scanned s
LEFT JOIN (SELECT account_id, kind::text, held, count(*) AS rows FROM gone GROUP BY 1, 2, 3) g
    ON true
"""

#: called after each purge statement with (table, rows deleted, seconds): for benchmarks
PurgeObserver = Callable[[str, int, float], None]


class AlreadyRunning(Exception):
    """Another SMS process holds the instance's lock."""


class NotOwner(Exception):
    """The instance's lock is not held (the database was lost): nothing is committed."""


class Outage:
    """The database outage one loop sees: logged when it begins and when it ends, once each,
    and the back-off between its attempts (RECONNECT_FIRST doubling up to RECONNECT_MAX)."""

    def __init__(self, what: str, password: str | None = None) -> None:
        self.what = what
        self.password = password
        self.since: float | None = None
        self.attempts = 0

    def failed(self, error: BaseException | str) -> float:
        """Count a failed attempt; return the seconds to wait before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            self.attempts = 0
            log.warning("sms_process.db_lost", loop=self.what, error=self.describe(error))
        self.attempts += 1
        return min(RECONNECT_MAX, RECONNECT_FIRST * 2 ** min(self.attempts - 1, 16))

    def recovered(self) -> None:
        if self.since is None:
            return
        log.info(
            "sms_process.db_back",
            loop=self.what,
            outage_seconds=round(time.monotonic() - self.since, 2),
            attempts=self.attempts,
        )
        self.since = None

    def describe(self, error: BaseException | str) -> str:
        """The error's text, the password masked should libpq ever quote it."""
        text = str(error).strip() or type(error).__name__
        if self.password:
            text = text.replace(self.password, obs.MASK)
        return text


class Receiver(BaseHandler):
    """The handler of an account's receiver binds: everything through the inbox."""

    def __init__(self, process: SmsProcess, account: Account, account_id: int) -> None:
        self.process = process
        self.account = account
        self.account_id = account_id
        self.m_binds = obs.BINDS_UP.labels(account.name, "receiver")
        self.watch = binds.BindWatch(account.name, account.receiver_settings.system_id, "receiver")

    def on_bind_failed(self, client: SmppClient, error: BaseException) -> None:
        """A receiver bind attempt failed: counted by reason, one log line an outage."""
        self.watch.failed(error)

    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None:
        if self.process.storing:
            handle_request(self.process.inbox, self.account_id, conn, pdu)
        # else: stopping, left unanswered: the SMSC sends it again

    def on_bound(self, conn: SmppConnection) -> None:
        self.watch.bound()
        self.m_binds.inc()

    def on_unbound(self, conn: SmppConnection, reason: str) -> None:
        self.m_binds.dec()
        obs.RECONNECTS.labels(self.account.name).inc()


class SmsProcess:
    def __init__(self, config: MidConfig, dsn: str) -> None:
        self.config = config
        self.settings = config.sms_process
        self.dsn = dsn
        mta = config.mta
        self.policy = RetryPolicy(
            period=mta.retry_period,
            max_retries=mta.max_retries,
            throttle_backoff=mta.throttle_backoff,
            default_validity=mta.default_validity,
        )
        self.stopping = asyncio.Event()
        self.storing = True
        self.exit_code = EXIT_OK
        self.dirty: set[int] = set()
        self.receivers: list[SmppClient] = []
        self.lease = binds.Lease(
            f"{LEASE_PREFIX}{config.host_id}:{os.getpid()}", config.host_id, config.mta.lease_ttl
        )
        self.names: dict[int, str] = {}
        self._slots_conn: psycopg.AsyncConnection | None = None
        self._wakeups: list[asyncio.Event] = []  # one a work loop
        self._working = True
        self.application_name = f"smsmta sms-process {socket.gethostname()} {os.getpid()}"[:63]
        #: set while this process holds the instance's lock (the owner rule: module docstring)
        self.owner = asyncio.Event()
        #: how many times the lock was taken: a change tells the first work loop to reload
        self.lock_epoch = 0
        self._check_lock = asyncio.Event()  # wakes the lock watch at once
        try:
            self._password = conninfo_to_dict(dsn).get("password") or None
        except psycopg.ProgrammingError:
            self._password = None

    async def connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=self.application_name
        )

    # --- life cycle --------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            self.lock_conn = await self.connect()
            await self._lock()
        except AlreadyRunning as error:
            log.error("sms_process.already_running", holder=str(error))
            print(
                f"smsmta sms-process: another SMS process is running against this database "
                f"({error}); there is exactly one per instance",
                file=sys.stderr,
            )
            return EXIT_FAILED
        self.lock_epoch = 1
        self.owner.set()
        ids = await sync_accounts(self.lock_conn, self.config)
        enabled = {ids[a.name]: a for a in self.config.accounts if a.enabled}
        self.enabled = enabled
        self.names = {account_id: a.name for account_id, a in enabled.items()}
        self.reconciler = Reconciler(
            {i: AccountRules.of(i, a) for i, a in enabled.items()},
            self.policy,
            match_wait=self.settings.receipt_match_wait,
            retry_interval=self.settings.receipt_retry_interval,
            multipart_status=self.settings.multipart_status,
        )
        self.reply_limiter = ReplyLimiter(
            self.settings.reply_interval, self.settings.reply_limit_entries
        )  # kept across MoHandler reloads: the reply limit is per SMS process
        self.mo = MoHandler(
            enabled, self.names, self.settings.mo_reassembly_timeout, self.reply_limiter
        )
        self.work_conn = await self.connect()
        held = await self.mo.reload(self.work_conn)
        self._mo_epoch = self.lock_epoch
        slow_kpi = [i for i, a in enabled.items() if not a.channel.realtime_kpi]
        if slow_kpi:
            cursor = await self.work_conn.execute(OPEN_DELIVERIES, (slow_kpi,))
            self.dirty.update(row[0] for row in await cursor.fetchall())

        # what startup made (modules, settings, tables) lives as long as the process: out
        # of the collector's sight, a full collection no longer walks it (~0.1 s each)
        gc.freeze()
        # the decoded PDUs of this process's own receivers wait for reconciliation (up to
        # a few batches' worth); rows stored by MTA children (TRX) are decoded from the table
        self.inbox = Inbox(
            self.connect, keep_decoded=DECODED_KEPT_BATCHES * self.settings.batch_size
        )
        self.inbox.on_flushed = self._inbox_flushed
        inbox_task = asyncio.create_task(self.inbox.run())
        inbox_task.add_done_callback(self._task_done)
        for account_id, account in enabled.items():
            if account.connection.mode is Mode.TX_RX:
                handler = Receiver(self, account, account_id)
                for _ in range(account.connection.connections):
                    client = SmppClient(receiver_settings(account), handler)
                    self.receivers.append(client)
        receiver_tasks = [asyncio.create_task(client.run()) for client in self.receivers]
        work = [
            asyncio.create_task(self._work_loop(worker))
            for worker in range(self.settings.reconcile_workers)
        ]
        for task in work:
            task.add_done_callback(self._task_done)
        background = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._watch_lock()),
            asyncio.create_task(self._backlog_gauge()),
            asyncio.create_task(self._purge_loop()),
            asyncio.create_task(self._hold_slots()),
        ]
        background[1].add_done_callback(self._task_done)
        port = obs.serve_metrics(self.settings.metrics_host, self.settings.metrics_port)
        log.info(
            "sms_process.started",
            accounts=sorted(self.names.values()),
            receivers=len(self.receivers),
            held_mo_parts=held,
            metrics_port=port,
        )
        systemd = Notifier()
        systemd.ready(f"{len(self.receivers)} receiver bind(s)")
        watchdog = asyncio.create_task(keep_alive(systemd))
        await self.stopping.wait()
        systemd.stopping()
        watchdog.cancel()
        await self._shutdown(inbox_task, receiver_tasks, work, background)
        return self.exit_code

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task the process cannot live without ended by an error: stop, exit 1."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error(
            "sms_process.task_failed",
            task=task.get_coro().__qualname__,
            error=repr(error),
            exc_info=error,
        )
        self.exit_code = EXIT_FAILED
        self.stopping.set()

    async def _lock(self) -> None:
        """At start: take the lock on lock_conn, else raise AlreadyRunning naming the holder."""
        if await _try_lock(self.lock_conn):
            return
        _, holder = await _holder(self.lock_conn)
        await self.lock_conn.close()
        raise AlreadyRunning(holder)

    # --- the lock through a database outage --------------------------------------------

    async def _watch_lock(self) -> None:
        """Every LOCK_CHECK_PERIOD (at once when woken): the lock's connection answers; when
        it does not, the owner flag goes down and the lock is taken again (`_retake_lock`)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_lock.wait(), LOCK_CHECK_PERIOD)
            self._check_lock.clear()
            conn = self.lock_conn
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), LOCK_CHECK_TIMEOUT)
                continue
            except (psycopg.Error, TimeoutError) as error:
                self.owner.clear()
                outage = Outage("advisory lock", self._password)
                delay = outage.failed(error if str(error) else "no answer in time")
                log.warning(
                    "sms_process.lock_lost",
                    note="batches, KPI sync and purge wait until the lock is taken again",
                )
            with contextlib.suppress(psycopg.Error):
                await conn.close()
            if not await self._retake_lock(outage, delay):
                return

    async def _retake_lock(self, outage: Outage, delay: float) -> bool:
        """Reconnect with back-off and take the lock again; False (exit 1) when another SMS
        process holds it by then."""
        while True:
            await asyncio.sleep(delay)
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await self.connect()
                if await _try_lock(conn):
                    break
                name, holder = await _holder(conn)
                await conn.close()
            except psycopg.Error as error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
                delay = outage.failed(error)
                continue
            if name == self.application_name:  # our own session from before, not gone yet
                delay = outage.failed(f"the lock is still held by {holder}")
                continue
            log.error("sms_process.lock_taken", holder=holder)
            print(
                f"smsmta sms-process: another SMS process took the lock while the database "
                f"was lost ({holder}); there is exactly one per instance",
                file=sys.stderr,
            )
            self.exit_code = EXIT_FAILED
            self.stopping.set()
            return False
        self.lock_conn = conn
        self.lock_epoch += 1
        # rows another holder may have handled meanwhile: decode from the table instead
        self.inbox.decoded.clear()
        self.owner.set()
        outage.recovered()
        log.info("sms_process.lock_taken_again", epoch=self.lock_epoch)
        self._wake()
        return True

    async def _confirm_lock(self) -> None:
        """Raise NotOwner unless the lock's connection answers now: called on each new work
        connection, so that the lock was held after it was opened."""
        conn = self.lock_conn
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), LOCK_CHECK_TIMEOUT)
        except (psycopg.Error, TimeoutError) as error:
            if conn is self.lock_conn:  # not a connection the watch replaced meanwhile
                self.owner.clear()
                self._check_lock.set()
            raise NotOwner from error

    async def _shutdown(
        self,
        inbox_task: asyncio.Task[None],
        receiver_tasks: list[asyncio.Task[None]],
        work: list[asyncio.Task[None]],
        background: list[asyncio.Task[None]],
    ) -> None:
        timeout = self.settings.shutdown_timeout
        log.info("sms_process.stopping", inbox_backlog=self.inbox.backlog)
        self.storing = False
        await self.inbox.close()  # what was stored is committed and acknowledged
        await asyncio.gather(*(client.stop(0) for client in self.receivers), return_exceptions=True)
        self._working = False
        self._wake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*work)), timeout)
        with contextlib.suppress(psycopg.Error, NotOwner):
            if self.owner.is_set():
                await self._sync_kpis(await self._fresh_work_conn())
        for task in [inbox_task, *work, *receiver_tasks, *background]:
            task.cancel()
        await asyncio.gather(
            inbox_task, *work, *receiver_tasks, *background, return_exceptions=True
        )
        if self._slots_conn is not None:  # the receivers' bind slots go with the lease
            with contextlib.suppress(psycopg.Error):
                await self.lease.release(self._slots_conn)
                await self._slots_conn.close()
        for conn in (self.work_conn, self.lock_conn):
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # closing the lock's connection releases the lock
        log.info(
            "sms_process.stopped",
            exit_code=self.exit_code,
            inbox_rows=self.inbox.stats.rows,
            inbox_refused=self.inbox.stats.refused,
        )

    # --- the work loop -----------------------------------------------------------------

    def _inbox_flushed(self, rows: int, seconds: float) -> None:
        obs.DB_FLUSH_SECONDS.labels("sms_process_inbox").observe(seconds)
        self._wake()

    def _wake(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    async def _fresh_work_conn(self) -> psycopg.AsyncConnection:
        if self.work_conn.closed or self.work_conn.broken:
            self.work_conn = await self.connect()
        return self.work_conn

    async def _work_loop(self, worker: int = 0) -> None:
        """Batches back to back while rows are due and the lock is held. Worker 0 also does
        MOs and the KPI sync; the others (own connections) reconcile receipts while it waits
        on the database. A lost connection is opened again once the lock is held again."""
        batch = self.settings.batch_size
        next_sync = time.monotonic() + self.settings.kpi_sync_period
        wakeup = asyncio.Event()
        self._wakeups.append(wakeup)
        conn: psycopg.AsyncConnection | None = self.work_conn if worker == 0 else None
        confirmed = conn is not None  # the start's connection: opened with the lock held
        outage = Outage(f"work loop {worker}", self._password)
        try:
            while self._working:
                wakeup.clear()
                if not self.owner.is_set():  # the owner rule (module docstring)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.owner.wait(), self.settings.poll_interval)
                    continue
                try:
                    if conn is None or conn.closed or conn.broken:
                        confirmed = False
                        conn = await self.connect()
                        if worker == 0:
                            self.work_conn = conn
                    if not confirmed:
                        await self._confirm_lock()
                        confirmed = True
                    if worker == 0 and self._mo_epoch != self.lock_epoch:
                        await self._reload_mo(conn)
                    handled = await self.work_once(conn, receipts_only=worker > 0)
                    if worker == 0 and time.monotonic() >= next_sync:
                        await self._sync_kpis(conn)
                        next_sync = time.monotonic() + self.settings.kpi_sync_period
                    outage.recovered()
                except NotOwner:
                    continue  # rolled back; waits for the lock above
                except psycopg.Error as error:
                    if conn is None or conn.closed or conn.broken:
                        self._check_lock.set()  # the lock's connection may be gone too
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
        epoch = self.lock_epoch  # taken again during the reload: reloaded once more
        mo = MoHandler(
            self.enabled, self.names, self.settings.mo_reassembly_timeout, self.reply_limiter
        )
        async with conn.transaction():
            held = await mo.reload(conn)
            self._check_owner()
        self.mo = mo
        self._mo_epoch = epoch
        log.info("sms_process.mo_reloaded", held_mo_parts=held, epoch=epoch)

    def _check_owner(self) -> None:
        """Inside a transaction, before its commit: roll back unless the lock is held."""
        if not self.owner.is_set():
            raise NotOwner

    async def work_once(self, conn: psycopg.AsyncConnection, receipts_only: bool = False) -> int:
        """Handle one batch of due inbox rows in one transaction; return how many."""
        started = time.monotonic()
        async with conn.transaction():
            # binary results: the PDU octets arrive as they are, not hex-escaped
            async with conn.cursor(binary=True) as cursor:
                fetch = FETCH_RECEIPTS if receipts_only else FETCH
                await cursor.execute(fetch, (self.settings.batch_size,))
                rows = await cursor.fetchall()
            decoded = self.inbox.decoded
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
            self._check_owner()
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
        self.dirty.update(outcome.dirty_deliveries)
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

    async def _sync_kpis(self, conn: psycopg.AsyncConnection) -> None:
        """Recount the KPIs of deliveries changed by receipts of non-real-time accounts."""
        ids = sorted(self.dirty)
        if not ids:
            return
        async with conn.transaction():
            await conn.execute(LOCK_DELIVERIES, (ids,))  # MTA increments wait: none lost
            await conn.execute(RECOUNT, (ids,))
            self._check_owner()
        self.dirty.difference_update(ids)
        log.info("sms_process.kpi_synced", deliveries=len(ids))

    # --- background --------------------------------------------------------------------

    async def _listen(self) -> None:
        """LISTEN smsmta_inbox: each NOTIFY wakes the work loops. Reconnects with back-off;
        once back, wakes them (what was notified during the outage is gone)."""
        outage = Outage("listen", self._password)
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await self.connect()
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                outage.recovered()
                self._wake()
                async for _ in conn.notifies():
                    self._wake()
            except psycopg.Error as error:
                delay = outage.failed(error)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
                await asyncio.sleep(delay)

    async def _backlog_gauge(self) -> None:
        """Every LOCK_CHECK_PERIOD: the inbox backlog gauge, on a connection of its own."""
        conn: psycopg.AsyncConnection | None = None
        outage = Outage("backlog gauge", self._password)
        delay = LOCK_CHECK_PERIOD
        while True:
            await asyncio.sleep(delay)
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await self.connect()
                cursor = await conn.execute("SELECT count(*) FROM mid.inbox")
                row = await cursor.fetchone()
                obs.SP_INBOX_BACKLOG.set(row[0] if row else 0)
                outage.recovered()
                delay = LOCK_CHECK_PERIOD
            except psycopg.Error as error:
                delay = max(outage.failed(error), LOCK_CHECK_PERIOD)

    async def _hold_slots(self) -> None:
        """Every SLOT_PERIOD: renew this process's lease, hold its receivers' bind slots.

        The receivers of a TX+RX account whose receiver login is the transmitter's take
        slots 0..r-1 of its max_binds (smsmta.binds): reserved, MTA children never take
        them, so the receivers bind whatever these rows say; the rows show the contract's
        use on one table, and go with the lease when this process dies (its expired lease
        is deleted by the MTA children's reclaim or by the next SMS process).
        """
        wanted = {
            account_id: binds.receivers_on_login(account)
            for account_id, account in self.enabled.items()
            if account.throughput.max_binds and binds.receivers_on_login(account)
        }
        if not wanted:
            return
        outage = Outage("bind slots", self._password)
        short: set[int] = set()
        while True:
            try:
                conn = self._slots_conn
                if conn is None or conn.closed or conn.broken:
                    conn = self._slots_conn = await self.connect()
                    await self.lease.register(conn)
                elif not await self.lease.renew(conn):
                    await self.lease.register(conn)
                await binds.forget_dead(conn, LEASE_PREFIX)
                for account_id, r in wanted.items():
                    held = await binds.update_slots(conn, account_id, self.lease.owner, range(r), r)
                    if len(held) < r and account_id not in short:
                        short.add(account_id)
                        log.warning(
                            "sms_process.receiver_slots_taken",
                            account=self.names[account_id],
                            held=len(held),
                            receivers=r,
                        )
                    elif len(held) == r:
                        short.discard(account_id)
                outage.recovered()
                delay = SLOT_PERIOD
            except psycopg.Error as error:
                delay = max(outage.failed(error), SLOT_PERIOD)
            await asyncio.sleep(delay)

    async def _purge_loop(self) -> None:
        """A purge run every purge_period, started only while the lock is held; a run cut by
        a lost connection is tried again after the back-off, not a whole period later."""
        conn: psycopg.AsyncConnection | None = None
        outage = Outage("purge", self._password)
        while True:
            await self.owner.wait()
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
            default_validity=self.config.mta.default_validity,
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


async def _try_lock(conn: psycopg.AsyncConnection) -> bool:
    """Take the instance's lock on `conn` if nobody holds it."""
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _holder(conn: psycopg.AsyncConnection) -> tuple[str | None, str]:
    """The lock holder's application_name and a description of it for the operator."""
    cursor = await conn.execute(HOLDER, (LOCK_KEY >> 32, LOCK_KEY & 0xFFFFFFFF))
    holder = await cursor.fetchone()
    if holder is None:
        return None, "the holder is not visible to this database user"
    name, client, since = holder
    return name, f"{name or 'unnamed'} from {client or 'local socket'} since {since}"


async def purge(
    conn: psycopg.AsyncConnection,
    settings: SmsProcessService,
    observe: PurgeObserver | None = None,
) -> dict[str, int]:
    """Delete what is past its retention, one bounded statement at a time; return counts.

    In order: provider_msg_id, receipt, broad_log, inbox (the statements above say what
    each takes and through which index). `conn` must be in autocommit: each statement is
    its own short transaction, followed by `purge_pause`. Counts: rows deleted by table,
    plus `receipt_unmatched` (unmatched and invalid receipts among the receipt history
    purged) and `broad_log_unpulled` (final messages past their retention kept because the
    marketing side has not pulled their status yet).

    Deliveries stay: a mid.delivery row (with its KPI counters and mid.delivery_sync) is
    one row per delivery, the summary the marketing side and operators still look up once
    its messages are gone; only its messages are purged. Receipt history rows of a purged
    message stay until their own retention (no foreign key: history of a message that is
    no longer there). The message log (broad_log_msg) is never purged: it holds the
    operators' qualifications, one row per normalised error.
    """
    counts = dict.fromkeys(
        (
            "provider_msg_id",
            "receipt",
            "receipt_unmatched",
            "broad_log",
            "broad_log_unpulled",
            "inbox",
        ),
        0,
    )
    batch = settings.purge_batch
    by_origin: dict[tuple[int, str, bool], int] = {}

    def done(table: str, deleted: int, seconds: float) -> None:
        counts[table] += deleted
        if deleted:  # counted as it goes: a purge cut short by SIGTERM is counted too
            obs.SP_PURGED.labels(table).inc(deleted)
        if observe is not None:
            observe(table, deleted, seconds)

    async def pause() -> None:
        if settings.purge_pause:
            await asyncio.sleep(settings.purge_pause)

    try:
        retention = settings.provider_msg_id_retention
        while True:
            cursor = await _timed(
                conn, PURGE_PROVIDER_MSG_ID, {"retention": retention, "batch": batch}
            )
            done("provider_msg_id", cursor.rowcount, cursor.seconds)
            if cursor.rowcount < batch:
                break
            await pause()

        retention = settings.receipt_retention
        while True:
            cursor = await _timed(conn, PURGE_RECEIPT, {"retention": retention, "batch": batch})
            deleted, unmatched = (await cursor.fetchone()) or (0, 0)
            counts["receipt_unmatched"] += unmatched
            done("receipt", deleted, cursor.seconds)
            if deleted < batch:
                break
            await pause()

        parameters: dict[str, Any] = {
            "retention": settings.broad_log_retention,
            "batch": batch,
            "after_at": "-infinity",
            "after_id": 0,
        }
        while True:
            cursor = await _timed(conn, PURGE_BROAD_LOG, parameters)
            scanned, deleted, last_at, last_id = (await cursor.fetchone()) or (0, 0, None, None)
            counts["broad_log_unpulled"] += scanned - deleted
            done("broad_log", deleted, cursor.seconds)
            if scanned < batch or last_id is None:
                break
            parameters["after_at"], parameters["after_id"] = last_at, last_id
            await pause()

        parameters = {"retention": settings.inbox_retention, "batch": batch, "after_id": 0}
        while True:
            cursor = await _timed(conn, PURGE_INBOX, parameters)
            rows = await cursor.fetchall()
            scanned, last_id, young = rows[0][:3] if rows else (0, None, 0)
            deleted = 0
            for *_, account_id, kind, held, n in rows:
                if n:
                    key = (account_id, kind, held)
                    by_origin[key] = by_origin.get(key, 0) + n
                    deleted += n
            done("inbox", deleted, cursor.seconds)
            if scanned < batch or young or last_id is None:
                break
            parameters["after_id"] = last_id
            await pause()
    finally:
        _log_purge(settings, counts, by_origin)
    return counts


def _log_purge(
    settings: SmsProcessService,
    counts: dict[str, int],
    by_origin: dict[tuple[int, str, bool], int],
) -> None:
    for table in ("provider_msg_id", "receipt", "broad_log", "inbox"):
        if counts[table]:
            log.info("sms_process.purged", table=table, rows=counts[table])
    if counts["receipt_unmatched"]:
        log.warning(
            "sms_process.purged_unmatched_receipts",
            rows=counts["receipt_unmatched"],
            retention_seconds=settings.receipt_retention,
        )
    if counts["broad_log_unpulled"]:
        log.info(
            "sms_process.purge_kept_unpulled",
            rows=counts["broad_log_unpulled"],
            note="final messages past their retention whose status the marketing side has "
            "not pulled yet",
        )
    for (account_id, kind, held), n in sorted(by_origin.items()):
        log.warning(
            "sms_process.purged_inbox",
            account_id=account_id,
            kind=kind,
            held=held,
            rows=n,
            retention_seconds=settings.inbox_retention,
        )


class _TimedCursor:
    """A cursor and how long its statement took."""

    def __init__(self, cursor: psycopg.AsyncCursor[Any], seconds: float) -> None:
        self.cursor = cursor
        self.seconds = seconds
        self.rowcount = cursor.rowcount

    async def fetchone(self) -> Any:
        return await self.cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return await self.cursor.fetchall()


async def _timed(
    conn: psycopg.AsyncConnection, query: str, parameters: dict[str, Any]
) -> _TimedCursor:
    started = time.monotonic()
    cursor = await conn.execute(query, parameters)
    return _TimedCursor(cursor, time.monotonic() - started)


def run(config: MidConfig, dsn: str) -> int:
    """Run the SMS process on uvloop until SIGTERM; return the exit code."""
    import uvloop

    return uvloop.run(SmsProcess(config, dsn).run())
