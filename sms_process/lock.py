"""The SMS process's instance lock: exactly one per instance (one database), and the owner rule.

The lock is a PostgreSQL advisory lock (`LOCK_KEY`) held on a connection of its own
(`InstanceLock`): a second SMS process against the same database refuses to start and
names the holder (`AlreadyRunning`, exit code 1). The lock watch checks that connection
every LOCK_CHECK_PERIOD seconds (at once when a work connection fails: `check_now`);
when it dies (a PostgreSQL restart, a terminated backend) the process rides through: it
reconnects with a capped back-off (RECONNECT_FIRST doubling up to RECONNECT_MAX, one log
line when the outage begins and one when it ends, never the DSN: `Outage`, which every
loop of the process uses), takes the lock again with pg_try_advisory_lock, and exits 1
naming the holder only if another SMS process holds it by then (a holder in this database:
another instance's process in another database of the same server holds its own lock; a
lock found busy whose holder is gone when looked for is tried again, UNSEEN_RETRIES times).

Without the lock (the owner rule). What only the instance's owner may do is what a second
SMS process started meanwhile would do too, with state the database does not hold: the
MO reassembly (held parts live in the first work loop's memory: two processes would each
complete, store and answer long MOs from their own halves), the auto-replies that follow,
and the receipt, KPI and purge work that goes with them. So while the lock is not held
(`owner` clear: from the moment the lock watch or a failed work connection finds the
lock's connection dead until the lock is taken again):
- no work-loop batch and no KPI sync starts, and one in hand rolls back instead of
  committing (`check_owner`, just before the commit, raises NotOwner; its rows were taken
  FOR UPDATE SKIP LOCKED, so until then no other process could take them either);
- a work connection opened during or after an outage is used only once the lock's
  connection answered after it was opened (`confirm`: a PostgreSQL restart kills both, so
  the lock was held on the same server lifetime as the connection doing the work);
- every time the lock is taken again (`epoch` counts the takes) the MO reassembly state is
  rebuilt from the held rows (`MoHandler.reload`, sms_process.work), and the decoded-PDU
  cache is dropped (`on_taken_again`): another process may have had the lock in between,
  and a batch rolled back may have fed parts to memory;
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

Touches: the database (the lock's connection, pg_locks and pg_stat_activity to name the
holder), stderr (the operator's message when another process holds the lock), the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import psycopg
import structlog

from smsmta import backoff

log = structlog.get_logger("sms_process")

#: pg advisory lock key of the instance's SMS process: "smsm" "ta" 0x0001
LOCK_KEY = 0x736D736D74610001
#: seconds between checks of the lock's connection (and updates of the backlog gauge)
LOCK_CHECK_PERIOD = 2.0
#: seconds a check of the lock's connection may take before it counts as dead
LOCK_CHECK_TIMEOUT = 20.0
#: reconnection back-off after losing the database: the first delay, doubled each attempt
#: up to the last (an outage of any length is ridden through, at most RECONNECT_MAX apart)
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0
RECONNECT = backoff.Backoff(RECONNECT_FIRST, RECONNECT_MAX)
#: times the lock is tried again when it was busy but its holder was gone when looked for
UNSEEN_RETRIES = 3

HOLDER = """
SELECT a.application_name, host(a.client_addr), a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class AlreadyRunning(Exception):
    """Another SMS process holds the instance's lock."""


class NotOwner(Exception):
    """The instance's lock is not held (the database was lost): nothing is committed."""


class Outage(backoff.Outage):
    """The database outage one loop sees (smsmta.backoff): `sms_process.db_lost` when it
    begins, `sms_process.db_back` when it ends, RECONNECT_FIRST doubling up to RECONNECT_MAX
    between attempts, the password masked."""

    def __init__(self, what: str, password: str | int | None = None) -> None:
        super().__init__(what, password, event_prefix="sms_process", backoff=RECONNECT, logger=log)


class InstanceLock:
    """The advisory lock on its own connection, and the owner flag the work checks."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        application_name: str,
        password: str | None,
    ) -> None:
        self.connect = connect
        self.application_name = application_name
        self._password = password
        self.conn: psycopg.AsyncConnection
        #: set while this process holds the instance's lock (the owner rule)
        self.owner = asyncio.Event()
        #: how many times the lock was taken: a change tells the first work loop to reload
        self.epoch = 0
        #: called once the lock is held again after an outage
        self.on_taken_again: Callable[[], None] = lambda: None
        self._check = asyncio.Event()  # wakes the watch at once

    async def take(self) -> None:
        """At start: take the lock on a connection of its own, else raise AlreadyRunning
        naming the holder."""
        self.conn = await self.connect()
        if not await _try_lock(self.conn):
            _, holder = await _holder(self.conn)
            await self.conn.close()
            raise AlreadyRunning(holder)
        self.epoch = 1
        self.owner.set()

    def check_owner(self) -> None:
        """Inside a transaction, before its commit: roll back unless the lock is held."""
        if not self.owner.is_set():
            raise NotOwner

    def check_now(self) -> None:
        """A work connection failed: the lock's connection may be gone too, check it now."""
        self._check.set()

    async def confirm(self) -> None:
        """Raise NotOwner unless the lock's connection answers now: called on each new work
        connection, so that the lock was held after it was opened."""
        conn = self.conn
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), LOCK_CHECK_TIMEOUT)
        except (psycopg.Error, TimeoutError) as error:
            if conn is self.conn:  # not a connection the watch replaced meanwhile
                self.owner.clear()
                self._check.set()
            raise NotOwner from error

    async def watch(self) -> None:
        """Every LOCK_CHECK_PERIOD (at once when woken): the lock's connection answers; when
        it does not, the owner flag goes down and the lock is taken again (`_retake`).
        Returns only when another SMS process took the lock meanwhile (the process exits 1)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check.wait(), LOCK_CHECK_PERIOD)
            self._check.clear()
            conn = self.conn
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
            if not await self._retake(outage, delay):
                return

    async def _retake(self, outage: Outage, delay: float) -> bool:
        """Reconnect with back-off and take the lock again; False (exit 1) when another SMS
        process holds it by then."""
        unseen = 0
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
            if name is None and unseen < UNSEEN_RETRIES:
                # no holder by the time we looked: the lock came free in between (our own
                # terminated backend exiting), so it is tried again rather than given up
                unseen += 1
                delay = outage.failed("the lock was busy, then no holder could be seen")
                continue
            log.error("sms_process.lock_taken", holder=holder)
            print(
                f"smsmta sms-process: another SMS process took the lock while the database "
                f"was lost ({holder}); there is exactly one per instance",
                file=sys.stderr,
            )
            return False
        self.conn = conn
        self.epoch += 1
        self.owner.set()
        outage.recovered()
        log.info("sms_process.lock_taken_again", epoch=self.epoch)
        # rows another holder may have handled meanwhile: the caller's caches go, the
        # work loops wake (no await since the owner flag went up: nothing ran in between)
        self.on_taken_again()
        return True


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
