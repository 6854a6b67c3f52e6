"""Every bind counted: the bind settings of an account, its bind slots, bind refusals.

An SMSC contract limits the binds open at once on one login (server, port, system_id).
Every bind smsmta opens to a login counts (SPEC section 4): MTA transmitters and
transceivers, the SMS process's receivers, the go-live check's test binds. Auto-replies
open none of their own: the MTA sends them on its binds (smsmta.replies).

- Settings: `bind_settings` (the transmitter or transceiver of an account) and
  `receiver_settings` (its receiver: its own settings, or the transmitter's), shared by
  the MTA, the SMS process and the go-live check.
- Slots: `max_binds` is split into slots 0..max_binds-1 of the account (`mid.bind_slot`).
  A slot is held by an owner, a `mid.mta_lease` row its process renews (MTA children,
  the SMS process, the go-live check): when the owner dies its lease expires, is deleted
  and its slots go with it (ON DELETE CASCADE). Taking and giving back are short
  transactions under the account row's lock, with the database clock.
- Reservation: receivers are not optional (receipts wait at the SMSC without them). The
  receivers of a TX+RX account whose receiver login is the transmitter's take slots
  0..r-1 (r = `connections`); MTA children take slots r..max_binds-1 only, so they can
  never take a receiver's slot. A receiver on another login is counted against that
  login (r binds of the SMS process, nothing else binds there) and reserves nothing.
  Configuration loading refuses a max_binds that leaves the MTA no bind.
- Refusals: `BindWatch` counts every refused bind by account and reason (the
  command_status name) and logs one line per outage (the first failure names the
  account, the login and the status; repeats are silent until a bind succeeds, which
  logs the recovery once).
Touches: the database (`mid.mta_lease`, `mid.bind_slot`), metrics, the log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import psycopg
import structlog

from smsmta import obs
from smsmta.settings import Account, receivers_on_login
from smsmta.smpp.aio import BindError, BindKind, BindSettings
from smsmta.smpp.constants import CommandStatus
from smsmta.smpp.session import Timeouts

log = structlog.get_logger("smsmta.binds")

REGISTER = """
INSERT INTO mid.mta_lease (owner, host_id, pid, expires_at)
VALUES (%s, %s, %s, now() + make_interval(secs => %s))
ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at, pid = EXCLUDED.pid
"""
RENEW = """
UPDATE mid.mta_lease SET expires_at = now() + make_interval(secs => %s)
WHERE owner = %s RETURNING owner
"""
FORGET = "DELETE FROM mid.mta_lease WHERE owner = %s"
FORGET_DEAD = "DELETE FROM mid.mta_lease WHERE expires_at < now() AND owner LIKE %s"
LOCK_ACCOUNT = "SELECT id FROM mid.external_account WHERE id = %s FOR UPDATE"
SLOTS = "SELECT slot, owner FROM mid.bind_slot WHERE account_id = %s"
TAKE_SLOT = "INSERT INTO mid.bind_slot (account_id, slot, owner) VALUES (%s, %s, %s)"
GIVE_BACK = "DELETE FROM mid.bind_slot WHERE account_id = %s AND owner = %s AND slot = ANY(%s)"


# --- settings ----------------------------------------------------------------------


def bind_settings(account: Account, kind: BindKind) -> BindSettings:
    """The transmitter (or transceiver) bind settings of an account."""
    c, t, s = account.connection, account.throughput, account.smsc
    return BindSettings(
        host=c.server,
        port=c.port,
        system_id=c.system_id,
        password=c.password.get_secret_value() if c.password else "",
        kind=kind,
        system_type=c.system_type,
        addr_ton=s.bind_ton,
        addr_npi=s.bind_npi,
        address_range=s.address_range,
        window=t.window,
        timeouts=Timeouts(
            response=t.mt_timeout,
            bind=t.bind_timeout,
            enquire_link_period=t.enquire_link_period,
            unbind=min(5.0, t.mt_timeout),
        ),
        reconnect_delay=t.reconnect_delay,
        tls=c.tls,
        tls_verify=not s.skip_tls_verification,
        tls_ca_file=str(c.tls_ca_file) if c.tls_ca_file else None,
        verbose_trace=c.verbose_trace,
        trace_personal_data=obs.personal_data_shown(),
        name=account.name,
    )


def receiver_settings(account: Account) -> BindSettings:
    """The receiver bind of an account: its receiver settings (or the transmitter's)."""
    receiver = account.receiver_settings
    return replace(
        bind_settings(account, BindKind.RECEIVER),
        host=receiver.server,
        port=receiver.port,
        system_id=receiver.system_id,
        password=receiver.password.get_secret_value() if receiver.password else "",
        system_type=receiver.system_type,
    )


def mta_slots(account: Account) -> range:
    """The slots MTA children may take: every slot but the receivers' (empty: no cap)."""
    return range(receivers_on_login(account), account.throughput.max_binds)


# --- leases and slots ----------------------------------------------------------------


@dataclass
class Lease:
    """A `mid.mta_lease` row: the owner of bind slots (and, for MTA children, claims)."""

    owner: str
    host_id: str
    ttl: float

    async def register(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            await conn.execute(REGISTER, (self.owner, self.host_id, os.getpid(), self.ttl))

    async def renew(self, conn: psycopg.AsyncConnection) -> bool:
        """Extend the lease; False when it was lost (another process reclaimed it)."""
        async with conn.transaction():
            cursor = await conn.execute(RENEW, (self.ttl, self.owner))
            return await cursor.fetchone() is not None

    async def release(self, conn: psycopg.AsyncConnection) -> None:
        """Leave cleanly: slots (and shares) go with the lease (ON DELETE CASCADE)."""
        async with conn.transaction():
            await conn.execute(FORGET, (self.owner,))


async def forget_dead(conn: psycopg.AsyncConnection, prefix: str) -> int:
    """Delete the expired leases whose owner starts with `prefix` (their slots go too).

    MTA children reclaim every expired lease already (with its claims); a process
    holding only binds (the SMS process, the go-live check) calls this for its kind.
    """
    async with conn.transaction():
        cursor = await conn.execute(FORGET_DEAD, (prefix + "%",))
        return cursor.rowcount


async def update_slots(
    conn: psycopg.AsyncConnection, account_id: int, owner: str, slots: range, wanted: int
) -> list[int]:
    """Hold up to `wanted` of the account's bind slots within `slots`; return those held.

    Slots held outside `slots` (max_binds lowered, a reservation that grew) are given
    back first, as are those beyond `wanted`.
    """
    async with conn.transaction():
        await conn.execute(LOCK_ACCOUNT, (account_id,))
        cursor = await conn.execute(SLOTS, (account_id,))
        taken: dict[int, str] = dict(await cursor.fetchall())  # slot -> owner
        mine = sorted(slot for slot, who in taken.items() if who == owner)
        surplus = [slot for slot in mine if slot not in slots]
        mine = [slot for slot in mine if slot in slots]
        surplus += mine[wanted:]
        if surplus:
            await conn.execute(GIVE_BACK, (account_id, owner, surplus))
            mine = [slot for slot in mine if slot not in surplus]
        for slot in slots:
            if len(mine) >= wanted:
                break
            if slot not in taken:
                await conn.execute(TAKE_SLOT, (account_id, slot, owner))
                mine.append(slot)
    return mine


# --- refusals ----------------------------------------------------------------------


def refusal_reason(status: int) -> str:
    """The metric label of a refused bind: its command_status name (a fixed set)."""
    try:
        return CommandStatus(status).name
    except ValueError:
        return "other"


class BindWatch:
    """The bind failures of one account's binds of one kind in this process.

    `failed` is called on every failed bind attempt, `bound` on every success: refusals
    are counted by reason; the first failure of an outage logs one warning naming the
    account, the login and the status, the rest are silent, and the first success after
    it logs the recovery once (with the count of failed attempts).
    """

    def __init__(self, account: str, system_id: str, kind: str) -> None:
        self.account = account
        self.system_id = system_id
        self.kind = kind
        self.failures = 0  # failed attempts in the outage under way (0: none)

    def failed(self, error: BaseException) -> None:
        if isinstance(error, BindError):
            reason = refusal_reason(error.status)
            obs.BINDS_REFUSED.labels(self.account, reason).inc()
            obs.BINDS_LAST_REFUSED.labels(self.account, reason).set(time.time())
            status = reason
        else:
            status = str(error) or type(error).__name__
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "binds.refused" if isinstance(error, BindError) else "binds.failed",
                account=self.account,
                system_id=self.system_id,
                bind=self.kind,
                status=status,
            )

    def bound(self) -> None:
        if self.failures:
            log.info(
                "binds.recovered",
                account=self.account,
                system_id=self.system_id,
                bind=self.kind,
                failed_attempts=self.failures,
            )
        self.failures = 0


# --- short-lived holders ----------------------------------------------------------------

ACCOUNT_ID = "SELECT id FROM mid.external_account WHERE internal_name = %s"
HOLDERS = """
SELECT s.owner, count(*) FROM mid.bind_slot s WHERE s.account_id = %s
GROUP BY s.owner ORDER BY s.owner
"""


class TestSlots:
    """Bind slots for a short-lived holder (the go-live check's test binds).

    `take(n)` registers a lease of its own (living `ttl` seconds: the check's longest run,
    so a check killed halfway frees its slots by then) and takes n slots anywhere in
    0..max_binds-1 that nobody holds; it takes none unless it gets all n, and then says
    who holds the account's slots. `release()` gives them back (the lease goes).
    """

    def __init__(self, dsn: str, account: Account, host_id: str, ttl: float) -> None:
        self.dsn = dsn
        self.account = account
        self.lease = Lease(f"go-live:{host_id}:{os.getpid()}", host_id, ttl)
        self.conn: psycopg.AsyncConnection | None = None

    async def take(self, wanted: int) -> str | None:
        """Take `wanted` slots; None when held, else why not (names who holds them)."""
        max_binds = self.account.throughput.max_binds
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        cursor = await self.conn.execute(ACCOUNT_ID, (self.account.name,))
        row = await cursor.fetchone()
        if row is None:  # never synced: no service ran for it, every slot is free
            return None
        account_id = row[0]
        await self.lease.register(self.conn)
        held = await update_slots(self.conn, account_id, self.lease.owner, range(max_binds), wanted)
        if len(held) >= wanted:
            return None
        await self.release()
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        cursor = await self.conn.execute(HOLDERS, (account_id,))
        holders = ", ".join(f"{owner} ({count})" for owner, count in await cursor.fetchall())
        return (
            f"the check needs {wanted} bind(s) but the services hold {max_binds - len(held)} of "
            f"the account's max_binds {max_binds} ({holders or 'none'}): binding would exceed "
            f"the contract"
        )

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            await self.lease.release(conn)
        except psycopg.Error as error:
            log.warning("binds.release_failed", owner=self.lease.owner, error=str(error))
        finally:
            await conn.close()
