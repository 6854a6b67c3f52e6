"""Queue claims: due `broad_log` rows of one account, taken in batches under a lease, and
given back when the lease holder died.

A claim is one statement: the due pending rows of the account, oldest first, locked
with FOR UPDATE SKIP LOCKED (so children and hosts never wait on each other nor take
the same row) and marked `sending` under the child's lease owner. Rows of paused or
cancelled deliveries stay in the queue: a NOT IN over the few such deliveries (a hashed
subplan), not NOT EXISTS, which the planner turns into an anti-join that scans and sorts
every pending row of a big delivery (604 ms a claim at 430k rows, 9 ms with NOT IN).
Each claimed message says whether its address asked the short code it is sent from to
stop (such a message is never sent): the blacklist's scope is
smsmta.numbers.blacklist_scope of the delivery's From (numeric From: that short code or
number; else the account's numeric source number; an alphanumeric or absent sender: the
account's short code), in the form the SMS process stores for the MO's destination, and
addresses are compared in their canonical form (the push and the MO both store it; a
row enqueued in another form is canonicalised for the comparison). The
scope needs the account's default country, so it is worked out here, once per delivery,
and the claimed (scope, address) pairs are looked up in one query by primary key after
the claim, in its transaction.

Reclaim: a child whose lease (`mid.mta_lease`, smsmta.binds) expired gets its `sending`
rows back into the queue as `pending`, flagged possible duplicates (some may have reached
the SMSC); `orphans` also sweeps claims whose lease row is gone altogether.

The transitions (smsmta.queue.states): claim pending -> sending, reclaim sending ->
pending. The MTA keeps the claimed messages in memory (mta.queue.Mt). Touches: the
database (`mid.broad_log`, `mid.delivery`, `mid.short_code_blacklist`, `mid.mta_lease`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import psycopg

from smsmta.numbers import NumberError, blacklist_scope, canonical

CLAIM = """
WITH due AS (
    SELECT b.id FROM mid.broad_log b
    WHERE b.account_id = %(account_id)s AND b.status = 'pending' AND b.next_try_at <= now()
      AND b.delivery_id NOT IN (SELECT d.id FROM mid.delivery d
                                WHERE d.state IN ('paused', 'cancelled'))
    ORDER BY b.next_try_at
    LIMIT %(limit)s
    FOR UPDATE OF b SKIP LOCKED
)
UPDATE mid.broad_log b SET status = 'sending', lease_owner = %(owner)s, updated_at = now()
FROM due, mid.delivery d WHERE b.id = due.id AND d.id = b.delivery_id
RETURNING b.id, b.delivery_id, b.address, b.text, b.retry_count, b.possible_duplicate,
    d.source_addr
"""

BLACKLISTED = """
SELECT s.short_code, s.address FROM mid.short_code_blacklist s
JOIN unnest(%s::text[], %s::text[]) AS c(short_code, address)
  ON s.short_code = c.short_code AND s.address = c.address
"""

DELIVERY_OPTIONS = """
SELECT id, source_addr, max_parts, transmission_mode::text, validity_end, priority,
       service_type, service_id, created_at
FROM mid.delivery WHERE id = ANY(%s)
"""

RECLAIM = """
WITH dead AS (
    DELETE FROM mid.mta_lease WHERE expires_at < now() RETURNING owner
)
UPDATE mid.broad_log SET status = 'pending', lease_owner = NULL, possible_duplicate = true,
                         updated_at = now()
WHERE status = 'sending' AND lease_owner IN (SELECT owner FROM dead)
"""

RECLAIM_ORPHANS = """
UPDATE mid.broad_log b SET status = 'pending', lease_owner = NULL, possible_duplicate = true,
                           updated_at = now()
WHERE b.status = 'sending'
  AND NOT EXISTS (SELECT 1 FROM mid.mta_lease l WHERE l.owner = b.lease_owner)
"""


class Claimed(NamedTuple):
    """One claimed message, in the order of mta.queue.Mt's arguments."""

    id: int
    delivery_id: int
    address: str
    text: str
    retry_count: int
    possible_duplicate: bool
    blacklisted: bool


def _canonical(address: str, default_country: str) -> str:
    """The address as blacklists hold it: queued rows are canonical already (the push
    stores that form), a row enqueued otherwise is canonicalised here (fast path)."""
    try:
        return canonical(address, default_country=default_country)
    except NumberError:
        return address


async def claim(
    conn: psycopg.AsyncConnection,
    account_id: int,
    owner: str,
    limit: int,
    *,
    default_source: str = "",
    short_code: str = "",
    default_country: str = "",
) -> list[Claimed]:
    """Claim up to `limit` due messages of the account for `owner` (a child's lease).

    `default_source` (the account's source number, else its short code), `short_code` and
    `default_country` (the account's) say which short code's blacklist applies to each
    message (smsmta.numbers.blacklist_scope of its delivery's From).
    """
    parameters = {"account_id": account_id, "owner": owner, "limit": limit}
    async with conn.transaction():
        cursor = await conn.execute(CLAIM, parameters)
        rows = await cursor.fetchall()
        scopes: dict[str | None, str] = {}
        pairs: list[tuple[str, str]] = []
        for row in rows:
            source_addr = row[6]
            scope = scopes.get(source_addr)
            if scope is None:
                scope = scopes[source_addr] = blacklist_scope(
                    source_addr, default_source, short_code, default_country
                )
            pairs.append((scope, _canonical(row[2], default_country)))
        blacklisted: set[tuple[str, str]] = set()
        if rows:
            cursor = await conn.execute(BLACKLISTED, ([p[0] for p in pairs], [p[1] for p in pairs]))
            blacklisted = {(scope, address) for scope, address in await cursor.fetchall()}
    return [
        Claimed(row[0], row[1], row[2], row[3], row[4], row[5], pair in blacklisted)
        for row, pair in zip(rows, pairs, strict=True)
    ]


async def delivery_options(
    conn: psycopg.AsyncConnection, delivery_ids: Iterable[int]
) -> list[tuple[Any, ...]]:
    """The sending options of these deliveries, one row each, in the order of the fields of
    mta.submit.DeliveryOptions (id first)."""
    cursor = await conn.execute(DELIVERY_OPTIONS, (list(delivery_ids),))
    return await cursor.fetchall()


async def reclaim_dead(conn: psycopg.AsyncConnection, *, orphans: bool = True) -> int:
    """Return the claims of children whose lease expired to the queue; count them.

    `orphans` also sweeps claims whose lease row is gone altogether (a child that left
    while answers were still missing): a scan of the claimed rows, so not every beat.
    """
    async with conn.transaction():
        cursor = await conn.execute(RECLAIM)
        count = cursor.rowcount
        if orphans:
            cursor = await conn.execute(RECLAIM_ORPHANS)
            count += cursor.rowcount
        return count
