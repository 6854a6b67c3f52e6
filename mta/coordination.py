"""What MTA children agree on through PostgreSQL: leases, rate shares, bind slots.

No cluster protocol: every rule is a short transaction on `mid` tables, with the
database's clock, so children on several hosts agree whatever their own clocks say.

- Lease: each child has an `mta_lease` row renewed every `heartbeat` seconds; past
  `ttl` without renewal, any child deletes it and returns its `sending` rows to the
  queue (flagged possible duplicates: some may have reached the SMSC), which the queue
  layer does (smsmta.queue.claims.reclaim_dead, re-exported here). A child that cannot
  renew for half the ttl stops sending (`fenced`) until it can again.
- Rate share: an account's max MT/s is split between the children that serve it. A
  child's share is `cap / n` but never more than what the others leave: a share that
  was lowered keeps counting at its old value for `HOLD` seconds (the sliding second of
  the cap plus a margin), so the sum of what children may send in any one second
  never exceeds the cap, even while children come and go.
- Bind slot: with `max_binds`, a bind needs one of the account's slots; children take
  only the slots the receivers of the same login leave them (smsmta.binds, the kernel's
  bind accountant, which also owns the lease rows every bind holder renews).

Touches: the database (`mid.rate_share`; `mid.mta_lease`, `mid.bind_slot` through
smsmta.binds; `mid.broad_log` through smsmta.queue.claims for reclaiming).
"""

from __future__ import annotations

import os

import psycopg

from smsmta.binds import Lease, update_slots
from smsmta.queue.claims import RECLAIM, RECLAIM_ORPHANS, reclaim_dead

__all__ = [
    "RECLAIM",
    "RECLAIM_ORPHANS",
    "Lease",
    "owner_name",
    "reclaim_dead",
    "update_share",
    "update_slots",
]

HOLD = 2.0  # seconds a lowered share keeps counting at its old value

LOCK_ACCOUNT = "SELECT id FROM mid.external_account WHERE id = %s FOR UPDATE"

SHARES = """
SELECT owner, share, previous_share,
       lowered_at IS NOT NULL AND lowered_at > now() - make_interval(secs => %s) AS holding
FROM mid.rate_share WHERE account_id = %s
"""

SET_SHARE = """
INSERT INTO mid.rate_share (account_id, owner, share, previous_share, lowered_at)
VALUES (%(account)s, %(owner)s, %(share)s, %(previous)s,
        CASE WHEN %(lowered)s THEN now() END)
ON CONFLICT (account_id, owner) DO UPDATE
SET share = EXCLUDED.share,
    previous_share = CASE WHEN %(lowered)s THEN EXCLUDED.previous_share
                          ELSE mid.rate_share.previous_share END,
    lowered_at = CASE WHEN %(lowered)s THEN now() ELSE mid.rate_share.lowered_at END
"""

LEAVE_SHARE = "DELETE FROM mid.rate_share WHERE account_id = %s AND owner = %s"


def owner_name(host_id: str, index: int) -> str:
    return f"{host_id}:{os.getpid()}:{index}"


async def update_share(
    conn: psycopg.AsyncConnection, account_id: int, owner: str, cap: float, active: bool = True
) -> float:
    """This child's share of the account's cap now (0 while others still hold it).

    A child with no bind to send on (`active` False: no bind slot left to it) takes no
    share: its share drops to 0 (still counting at its old value for `HOLD` seconds) and
    its row goes once the hold is over, so the children that can send split the cap.
    """
    async with conn.transaction():
        await conn.execute(LOCK_ACCOUNT, (account_id,))
        cursor = await conn.execute(SHARES, (HOLD, account_id))
        rows = await cursor.fetchall()
        mine = next((row for row in rows if row[0] == owner), None)
        current = mine[1] if mine is not None else 0.0
        if not active:
            if mine is None:
                return 0.0
            if current == 0 and not mine[3]:
                await conn.execute(LEAVE_SHARE, (account_id, owner))
                return 0.0
            share = 0.0
        else:
            members = len(rows) + (0 if mine is not None else 1)
            others = sum(
                max(share, previous) if holding else share
                for who, share, previous, holding in rows
                if who != owner
            )
            share = max(0.0, min(cap / members, cap - others))
        lowered = share < current
        await conn.execute(
            SET_SHARE,
            {
                "account": account_id,
                "owner": owner,
                "share": share,
                "previous": current,
                "lowered": lowered,
            },
        )
    return share
