"""The SMS process: `smsmta sms-process`, exactly one per instance (one database).

What it runs until SIGTERM, and where each part lives:

- the instance lock (sms_process.lock): a PostgreSQL advisory lock on a connection of its
  own; a second SMS process against the same database refuses to start and names the
  holder (exit code 1). A lost lock connection is ridden through (reconnect with back-off,
  take the lock again); while the lock is not held nothing that only the instance's owner
  may do starts or commits (the owner rule, told there);
- `connections` receiver binds per enabled TX+RX account (receiver settings), whose
  deliver_sm / data_sm go through the `Inbox` (smsmta.queue.inbox): stored, committed, then
  acknowledged. TRX accounts receive on the MTA's transceivers, into the same inbox. With
  max_binds, the receivers on the transmitter's login hold bind slots 0..r-1 under this
  process's lease (`_hold_slots`, smsmta.binds): every bind counts, and the MTA never
  takes a receiver's slot. No other bind: auto-replies go out on the MTA's binds;
- the work loops (sms_process.work, `reconcile_workers` of them, each on its own
  connection): due inbox rows, a batch per transaction: receipts to sms_process.receipts,
  MOs to sms_process.mo (the first loop only), the auto-replies stored in
  `mid.reply_outbox` for the MTA children to send (sms_process.replies);
- the housekeeping (sms_process.housekeeping): the KPI sync of deliveries of accounts
  without real-time KPIs (every kpi_sync_period), the end of the wait for receipts and the
  retention purge (every purge_period);
- the LISTEN on `smsmta_inbox` (each NOTIFY wakes the work loops) and the inbox backlog
  gauge (every LOCK_CHECK_PERIOD); while the database is lost they reconnect on their own;
- /metrics when the settings give a port.

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

import psycopg
import structlog

from sms_process.housekeeping import Housekeeping
from sms_process.lock import LOCK_CHECK_PERIOD, AlreadyRunning, InstanceLock, NotOwner, Outage
from sms_process.receipts import Reconciler
from sms_process.work import WorkLoops
from smsmta import backoff, binds, obs
from smsmta.accounts import sync_accounts
from smsmta.binds import receiver_settings
from smsmta.policy import AccountRules, RetryPolicy
from smsmta.queue.inbox import NOTIFY_CHANNEL, Inbox, handle_request
from smsmta.settings import Account, MidConfig, Mode
from smsmta.smpp.aio import BaseHandler, SmppClient, SmppConnection
from smsmta.smpp.pdu import Pdu
from smsmta.systemd import Notifier, keep_alive

log = structlog.get_logger("sms_process")

EXIT_OK, EXIT_FAILED = 0, 1
#: how many batches of received PDUs are kept decoded for reconciliation (Inbox.decoded)
DECODED_KEPT_BATCHES = 10
#: owner names of SMS processes in mid.mta_lease (holders of the receivers' bind slots)
LEASE_PREFIX = "sms-process:"
#: seconds between renewals of that lease (it lives config.mta.lease_ttl)
SLOT_PERIOD = 1.0


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
        self.receivers: list[SmppClient] = []
        self.lease = binds.Lease(
            f"{LEASE_PREFIX}{config.host_id}:{os.getpid()}", config.host_id, config.mta.lease_ttl
        )
        self.names: dict[int, str] = {}
        self._slots_conn: psycopg.AsyncConnection | None = None
        self.application_name = f"smsmta sms-process {socket.gethostname()} {os.getpid()}"[:63]
        self._password = backoff.dsn_password(dsn)
        self.lock = InstanceLock(self.connect, self.application_name, self._password)
        self.lock.on_taken_again = self._lock_taken_again

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
            await self.lock.take()
        except AlreadyRunning as error:
            log.error("sms_process.already_running", holder=str(error))
            print(
                f"smsmta sms-process: another SMS process is running against this database "
                f"({error}); there is exactly one per instance",
                file=sys.stderr,
            )
            return EXIT_FAILED
        ids = await sync_accounts(self.lock.conn, self.config)
        enabled = {ids[a.name]: a for a in self.config.accounts if a.enabled}
        self.enabled = enabled
        self.names = {account_id: a.name for account_id, a in enabled.items()}
        reconciler = Reconciler(
            {i: AccountRules.of(i, a) for i, a in enabled.items()},
            self.policy,
            match_wait=self.settings.receipt_match_wait,
            retry_interval=self.settings.receipt_retry_interval,
            multipart_status=self.settings.multipart_status,
        )
        self.housekeeping = Housekeeping(
            self.settings,
            self.config.mta.default_validity,
            self.lock,
            self.connect,
            self._password,
            self.names,
        )
        self.work = WorkLoops(
            self.settings,
            self.lock,
            self.connect,
            self._password,
            reconciler,
            self.housekeeping,
            enabled,
            self.names,
        )
        held = await self.work.start()
        await self.housekeeping.mark_open_deliveries(
            self.work.conn, [i for i, a in enabled.items() if not a.channel.realtime_kpi]
        )

        # what startup made (modules, settings, tables) lives as long as the process: out
        # of the collector's sight, a full collection no longer walks it (~0.1 s each)
        gc.freeze()
        # the decoded PDUs of this process's own receivers wait for reconciliation (up to
        # a few batches' worth); rows stored by MTA children (TRX) are decoded from the table
        self.inbox = Inbox(
            self.connect,
            keep_decoded=DECODED_KEPT_BATCHES * self.settings.batch_size,
            password=self._password,
        )
        self.work.decoded = self.inbox.decoded
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
            asyncio.create_task(self.work.loop(worker))
            for worker in range(self.settings.reconcile_workers)
        ]
        for task in work:
            task.add_done_callback(self._task_done)
        background = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._watch_lock()),
            asyncio.create_task(self._backlog_gauge()),
            asyncio.create_task(self.housekeeping.purge_loop()),
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
            task=getattr(task.get_coro(), "__qualname__", task.get_name()),
            error=repr(error),
            exc_info=error,
        )
        self.exit_code = EXIT_FAILED
        self.stopping.set()

    async def _watch_lock(self) -> None:
        """The lock watch (sms_process.lock); it returns only when another SMS process took
        the lock while the database was lost: exit 1."""
        await self.lock.watch()
        self.exit_code = EXIT_FAILED
        self.stopping.set()

    def _lock_taken_again(self) -> None:
        # rows another holder may have handled meanwhile: decode from the table instead
        self.inbox.decoded.clear()
        self.work.wake()

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
        self.work.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*work)), timeout)
        with contextlib.suppress(psycopg.Error, NotOwner):
            if self.lock.owner.is_set():
                await self.housekeeping.sync_kpis(await self.work.fresh_conn())
        for task in [inbox_task, *work, *receiver_tasks, *background]:
            task.cancel()
        await asyncio.gather(
            inbox_task, *work, *receiver_tasks, *background, return_exceptions=True
        )
        if self._slots_conn is not None:  # the receivers' bind slots go with the lease
            with contextlib.suppress(psycopg.Error):
                await self.lease.release(self._slots_conn)
                await self._slots_conn.close()
        for conn in (self.work.conn, self.lock.conn):
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # closing the lock's connection releases the lock
        log.info(
            "sms_process.stopped",
            exit_code=self.exit_code,
            inbox_rows=self.inbox.stats.rows,
            inbox_refused=self.inbox.stats.refused,
        )

    def _inbox_flushed(self, rows: int, seconds: float) -> None:
        obs.DB_FLUSH_SECONDS.labels("sms_process_inbox").observe(seconds)
        self.work.wake()

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
                self.work.wake()
                async for _ in conn.notifies():
                    self.work.wake()
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


def run(config: MidConfig, dsn: str) -> int:
    """Run the SMS process on uvloop until SIGTERM; return the exit code."""
    import uvloop

    return uvloop.run(SmsProcess(config, dsn).run())
