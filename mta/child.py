"""An MTA child process: every enabled account's senders, one writer, one heartbeat.

Started by the supervisor as `python -m mta.child --config FILE --index N` with the
database URL in SMSMTA_DATABASE_URL. It registers its lease, then runs until SIGTERM:

- one `AccountSender` per enabled account (mta.sender), woken by NOTIFY on the
  `smsmta_queue` channel (payload: the account id) and by a short poll otherwise; it also
  sends the account's auto-replies from `mid.reply_outbox` on its binds (mta.replies);
- one `Writer` (mta.writer) for every outcome;
- a heartbeat each second: renew the lease (or stop sending: fenced), return the claims
  of dead children to the queue, take this child's rate share and bind slots of each
  account (never the slots reserved for the SMS process's receivers: smsmta.binds), let
  AIMD climb back; the first child also reports the queue depth.

Orphaned: when SMSMTA_MTA_SUPERVISOR_PID names the supervisor and the child's parent is
no longer that process (the supervisor was killed), the heartbeat stops the child as
SIGTERM would: an orphan must not go on sending next to a new supervisor's children.

SIGTERM: stop claiming, wait for the answers on the wire (at most shutdown_timeout),
write every outcome, hand unsent claims back, unbind, drop the lease, exit 0.
Touches: the database (four connections), SMPP sockets, signals, metrics files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import psycopg
import structlog
from psycopg.conninfo import make_conninfo

from mta import coordination
from mta.sender import AccountSender
from mta.writer import Writer
from smsmta import binds as binds_module
from smsmta import obs, settings
from smsmta.backoff import Backoff, Outage, dsn_password
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn
from smsmta.policy import RetryPolicy
from smsmta.queue.inbox import Inbox
from smsmta.settings import Mode

log = structlog.get_logger("mta.child")

NOTIFY_CHANNEL = "smsmta_queue"
SUPERVISOR_PID_ENV = "SMSMTA_MTA_SUPERVISOR_PID"  # set by mta.supervisor
HEARTBEAT = 1.0
#: the wait between LISTEN attempts while the database is lost (senders poll meanwhile)
LISTEN_RETRY = Backoff(1.0, 1.0)

QUEUE_DEPTH = """
SELECT account_id, count(*), extract(epoch FROM now() - min(next_try_at))
FROM mid.broad_log WHERE status = 'pending' AND next_try_at <= now()
GROUP BY account_id
"""


async def connect(dsn: str) -> psycopg.AsyncConnection:
    """A database connection that commits only inside explicit transactions."""
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


class Child:
    def __init__(self, config: settings.MidConfig, index: int, dsn: str) -> None:
        self.config = config
        self.index = index
        # named in pg_stat_activity: which host and child holds which connection
        name = f"smsmta mta {config.host_id} child {index}"[:63]
        self.dsn = make_conninfo(dsn, application_name=name)
        self.password = dsn_password(dsn)  # masked in the log
        mta = config.mta
        self.lease = coordination.Lease(
            coordination.owner_name(config.host_id, index), config.host_id, mta.lease_ttl
        )
        self.policy = RetryPolicy(
            period=mta.retry_period,
            max_retries=mta.max_retries,
            throttle_backoff=mta.throttle_backoff,
            default_validity=mta.default_validity,
        )
        self.senders: dict[int, AccountSender] = {}
        self.stopping = asyncio.Event()
        self.failed: BaseException | None = None
        self._last_renewal = 0.0
        supervisor = os.environ.get(SUPERVISOR_PID_ENV, "")
        self.supervisor_pid = int(supervisor) if supervisor.isdigit() else None

    def orphaned(self) -> bool:
        """True when the supervisor that started this child is gone."""
        return self.supervisor_pid is not None and os.getppid() != self.supervisor_pid

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.coord = await connect(self.dsn)
        writer_conn = await connect(self.dsn)
        await self.lease.register(self.coord)
        self._last_renewal = loop.time()
        self.writer = Writer(
            writer_conn,
            self.lease.owner,
            self.policy,
            connect=self._reconnect,
            password=self.password,
        )
        self.writer.on_flushed = lambda rows, seconds: obs.DB_FLUSH_SECONDS.labels("mta").observe(
            seconds
        )
        writer_task = asyncio.create_task(self.writer.run())
        writer_task.add_done_callback(self._task_done)
        inbox = inbox_task = None
        if any(a.enabled and a.connection.mode is Mode.TRX for a in self.config.accounts):
            # TRX binds receive: store before answering
            inbox = Inbox(self._reconnect, password=self.password)
            inbox_task = asyncio.create_task(inbox.run())
            inbox_task.add_done_callback(self._task_done)
        ids = await self._account_ids()
        for account in self.config.accounts:
            if not account.enabled or account.name not in ids:
                continue
            sender = AccountSender(
                account=account,
                account_id=ids[account.name],
                owner=self.lease.owner,
                connect=self._reconnect,
                writer=self.writer,
                policy=self.policy,
                claim_batch=self.config.mta.claim_batch,
                poll_interval=self.config.mta.poll_interval,
                inbox=inbox if account.connection.mode is Mode.TRX else None,
                receipt_on_every_part=self.config.sms_process.multipart_status == "all_parts",
            )
            sender.on_fatal = self._fatal
            self.senders[sender.account_id] = sender
        for sender in self.senders.values():
            sender.start(await self._coordinate(sender))
        log.info(
            "mta.child_started",
            owner=self.lease.owner,
            accounts=[s.account.name for s in self.senders.values()],
        )
        listener = asyncio.create_task(self._listen())
        heartbeat = asyncio.create_task(self._heartbeat())
        await self.stopping.wait()
        log.info("mta.child_stopping", owner=self.lease.owner)
        heartbeat.cancel()
        listener.cancel()
        timeout = self.config.mta.shutdown_timeout
        if inbox is not None:  # answer what is stored while the binds are still up
            await inbox.close()
            if inbox_task is not None:
                inbox_task.cancel()
        await asyncio.gather(*(s.stop(timeout) for s in self.senders.values()))
        await self.writer.close()
        writer_task.cancel()
        with contextlib.suppress(psycopg.Error):
            await self.lease.release(await self._fresh(self.coord))
        log.info("mta.child_stopped", owner=self.lease.owner, flushes=self.writer.stats.flushes)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """The writer or the inbox gave up (smsmta.batch): stop cleanly, exit non-zero."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        log.error("mta.task_failed", owner=self.lease.owner, error=repr(error), exc_info=error)
        self._fatal(error)

    def _fatal(self, error: BaseException) -> None:
        """A sender's task died of an unexpected error: stop cleanly, exit non-zero."""
        self.failed = error
        self.stopping.set()

    async def _reconnect(self) -> psycopg.AsyncConnection:
        return await connect(self.dsn)

    async def _fresh(self, conn: psycopg.AsyncConnection) -> psycopg.AsyncConnection:
        if conn.closed or conn.broken:
            return await connect(self.dsn)
        return conn

    async def _account_ids(self) -> dict[str, int]:
        names = [account.name for account in self.config.accounts]
        cursor = await self.coord.execute(
            "SELECT internal_name, id FROM mid.external_account WHERE internal_name = ANY(%s)",
            (names,),
        )
        return dict(await cursor.fetchall())

    async def _coordinate(self, sender: AccountSender) -> int:
        """Take this child's bind slots and rate share of one account; return binds to run.

        Slots first: a child left without a bind (every slot held by others) takes no
        share of the cap, or the children that do send would be held to part of it.
        """
        account = sender.account
        binds = account.connection.connections
        if account.throughput.max_binds:  # the receivers' slots are never the MTA's
            slots = await coordination.update_slots(
                self.coord,
                sender.account_id,
                self.lease.owner,
                binds_module.mta_slots(account),
                binds,
            )
            binds = len(slots)
        if sender.cap:
            share = await coordination.update_share(
                self.coord, sender.account_id, self.lease.owner, sender.cap, active=binds > 0
            )
            sender.set_share(share)
        return binds

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        beats = 0
        outage = self._outage("heartbeat")
        while True:
            await asyncio.sleep(HEARTBEAT)
            beats += 1
            if self.orphaned():
                log.error("mta.supervisor_gone", owner=self.lease.owner, pid=self.supervisor_pid)
                self.stopping.set()
                return
            try:
                self.coord = await self._fresh(self.coord)
                renewed = await self.lease.renew(self.coord)
                if not renewed:  # reclaimed by another child after we went silent
                    # Our claims went back to the queue with the lease: sending the ones
                    # still in memory would duplicate what the other children now send
                    # (a PostgreSQL restart longer than lease_ttl sent 4 x the window).
                    dropped = sum(s.forget_unsent() for s in self.senders.values())
                    log.error("mta.lease_lost", owner=self.lease.owner, claims_dropped=dropped)
                    await self.lease.register(self.coord)
                self._last_renewal = loop.time()
                await coordination.reclaim_dead(self.coord, orphans=beats % 10 == 0)
                for sender in self.senders.values():
                    sender.set_fenced(False)
                    sender.set_binds(await self._coordinate(sender))
                    sender.tick()
                if self.index == 0 and beats % 5 == 0:
                    await self._queue_depth()
                outage.recovered()
            except psycopg.Error as error:
                outage.failed(error)  # the next beat is the next attempt
                if loop.time() - self._last_renewal > self.lease.ttl / 2:
                    for sender in self.senders.values():
                        sender.set_fenced(True)

    async def _queue_depth(self) -> None:
        cursor = await self.coord.execute(QUEUE_DEPTH)
        rows = {account_id: (count, age) for account_id, count, age in await cursor.fetchall()}
        for account_id, sender in self.senders.items():
            count, age = rows.get(account_id, (0, 0.0))
            obs.QUEUE_DEPTH.labels(sender.account.name).set(count)
            obs.QUEUE_OLDEST_AGE.labels(sender.account.name).set(float(age or 0.0))

    async def _listen(self) -> None:
        outage = self._outage("listen")
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await connect(self.dsn)
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                outage.recovered()
                async for notify in conn.notifies():
                    try:
                        sender = self.senders.get(int(notify.payload))
                    except ValueError:
                        sender = None
                    for target in [sender] if sender else self.senders.values():
                        target.notify()
            except psycopg.Error as error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
                await asyncio.sleep(outage.failed(error))

    def _outage(self, loop: str) -> Outage:
        """A loop's database outage (smsmta.backoff): `mta.<loop>_failed` once when it
        begins, `mta.<loop>_recovered` once when it ends, the password masked. LISTEN
        retries every LISTEN_RETRY; the heartbeat at its next beat."""
        return Outage(
            loop,
            self.password,
            event_prefix="mta",
            backoff=LISTEN_RETRY,
            lost=f"{loop}_failed",
            back=f"{loop}_recovered",
            logger=log,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mta.child", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    args = parser.parse_args(argv)
    config = settings.load(args.config)
    if not isinstance(config, settings.MidConfig):
        print(f"{args.config}: an MTA needs a kind: mid settings file", file=sys.stderr)
        return 2
    obs.configure_logging(
        f"mta-child-{args.index}",
        config.logging.level,
        config.logging.format,
        show_personal_data=config.logging.show_personal_data,
    )
    url = os.environ.get(DATABASE_URL_ENV) or settings.database_url(config)
    if not url:
        print(f"mta.child: {DATABASE_URL_ENV} is not set", file=sys.stderr)
        return 2
    import uvloop

    child = Child(config, args.index, libpq_dsn(url))
    uvloop.run(child.run())
    return 0 if child.failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
