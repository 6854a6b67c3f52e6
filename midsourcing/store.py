"""The mid API's database work: deliveries, push chunks, state changes and status pulls.

Contract:
- A delivery is found by its mid id and belongs to the operator whose login starts its
  account's internal name; another operator's delivery is "not found" (404), never 403,
  so ids of other operators' deliveries are not confirmed.
- A chunk is one transaction: the delivery row is read FOR NO KEY UPDATE (a concurrent
  cancel or complete waits, so no message lands in a cancelled or completed delivery), the
  messages are COPYed into a temporary table and inserted with ON CONFLICT (delivery_id,
  marketing_message_id) DO NOTHING (smsmta.queue.enqueue.enqueue_idempotent): a chunk
  pushed again never duplicates. Chunks of one delivery are queued one after the other:
  the enqueue UPDATEs the delivery row (to_send), and with only a share lock taken first
  two chunks each held it and waited for the other to upgrade it, a deadlock. The numbers
  come in the canonical form (midsourcing.api puts them in it and refuses, alone, the
  rows that cannot be), so the queue holds the form the blacklists compare.
- The status pull returns the messages whose status changed after a cursor, in
  (status_xid, id) order, where status_xid is the id of the transaction that last changed
  the row (trigger mid.broad_log_status_changed). Only changes of transactions older than
  the oldest one still running are returned (pg_snapshot_xmin), so a transaction that
  commits late can never be passed over by a cursor: it is returned at a later pull. The
  cursor is `<xid>.<id>` ("" for the start); pulling from a cursor acknowledges what came
  before it (mid.delivery_sync, for the sync lag). The counters of a page are exact for a
  small delivery; for a big one (counting took over COUNT_CACHE_FROM s) they may be a
  count made up to COUNT_REUSE times its own duration earlier, never when it showed every
  message final.
- A delivery's state moves only as the table of smsmta.queue.deliveries says, by its
  statements run in this module's transactions, under this module's locks: complete and
  the operator's actions (pause, resume, cancel) read the delivery FOR UPDATE, so the
  state they check is the state they change and a chunk in flight finishes first.
- A delivery is done when its push is complete and every message is final.
- Cancelling a delivery ends its messages not claimed yet, in the same transaction
  (smsmta.queue.enqueue.cancel_pending).

Touches: the mid schema: delivery_sync (its only writer); delivery and broad_log read here
and written only through the queue layer (smsmta.queue.deliveries, smsmta.queue.enqueue);
NOTIFY smsmta_queue.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from midsourcing.schemas import (
    Counters,
    DeliveryCreate,
    DeliveryState,
    MessageStatus,
    SmsOptions,
    StatusChange,
    TransmissionMode,
)
from smsmta.queue import deliveries
from smsmta.queue.enqueue import (
    DeliverySpec,
    cancel_pending,
    create_delivery,
    enqueue_idempotent,
)

_CURSOR = re.compile(r"^(\d{1,19})\.(\d{1,19})$")


class Conflict(Exception):
    """The request cannot be done in the delivery's present state (409)."""


class BadCursor(ValueError):
    """A status cursor that this server did not give out."""


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    account_id: int
    account: str
    operator: str
    marketing_delivery_id: str
    label: str
    state: str
    options: SmsOptions
    push_complete: bool


def parse_cursor(cursor: str) -> tuple[int, int]:
    if cursor == "":
        return 0, 0
    match = _CURSOR.match(cursor)
    if match is None:
        raise BadCursor(f"invalid cursor {cursor[:40]!r}: give back a cursor this API returned")
    xid, row_id = int(match.group(1)), int(match.group(2))
    if xid >= 2**63 or row_id >= 2**63:
        raise BadCursor("invalid cursor: out of range")
    return xid, row_id


def format_cursor(xid: int, row_id: int) -> str:
    return "" if (xid, row_id) == (0, 0) else f"{xid}.{row_id}"


async def account_id(conn: psycopg.AsyncConnection, internal_name: str) -> int | None:
    """The id of an enabled mid account, None when it is absent or disabled."""
    cursor = await conn.execute(
        "SELECT id FROM mid.external_account WHERE internal_name = %s AND enabled",
        (internal_name,),
    )
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


_DELIVERY = """
SELECT d.id, d.account_id, a.internal_name, a.operator_login, d.marketing_delivery_id, d.label,
       d.state::text, d.source_addr, d.max_parts, d.transmission_mode::text, d.validity_end,
       d.priority, d.service_type, d.service_id, s.push_completed_at IS NOT NULL
FROM mid.delivery d
JOIN mid.external_account a ON a.id = d.account_id
LEFT JOIN mid.delivery_sync s ON s.delivery_id = d.id
WHERE d.id = %s AND a.operator_login = %s
"""


def _delivery(row: tuple[Any, ...]) -> DeliveryRow:
    options = SmsOptions(
        source_addr=row[7],
        max_parts=row[8],
        transmission_mode=TransmissionMode(row[9]) if row[9] else None,
        validity_end=row[10],
        priority=row[11],
        service_type=row[12],
        service_id=row[13],
    )
    return DeliveryRow(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], options, bool(row[14])
    )


async def get_delivery(
    conn: psycopg.AsyncConnection, delivery_id: int, operator: str, *, lock: str = ""
) -> DeliveryRow | None:
    if not 0 < delivery_id < 2**63:
        return None
    query = _DELIVERY + (f" FOR {lock} OF d" if lock else "")
    cursor = await conn.execute(query, (delivery_id, operator))
    row = await cursor.fetchone()
    return None if row is None else _delivery(row)


async def create(
    conn: psycopg.AsyncConnection, account: int, operator: str, request: DeliveryCreate
) -> tuple[DeliveryRow, bool]:
    """Create the delivery, or find it by (account, marketing delivery id); True if new."""
    options = request.options
    spec = DeliverySpec(
        marketing_delivery_id=request.marketing_delivery_id,
        label=request.label,
        source_addr=options.source_addr,
        max_parts=options.max_parts,
        transmission_mode=options.transmission_mode.value if options.transmission_mode else None,
        validity_end=options.validity_end,
        priority=options.priority,
        service_type=options.service_type,
        service_id=options.service_id,
    )
    delivery_id = await create_delivery(conn, account, spec)
    cursor = await conn.execute(
        "INSERT INTO mid.delivery_sync (delivery_id) VALUES (%s) ON CONFLICT DO NOTHING",
        (delivery_id,),
    )
    created = cursor.rowcount == 1
    row = await get_delivery(conn, delivery_id, operator)
    assert row is not None
    return row, created


async def push_chunk(
    conn: psycopg.AsyncConnection,
    delivery_id: int,
    operator: str,
    messages: Iterable[tuple[int, str, str]],
) -> tuple[int, int, int, str] | None:
    """Queue a chunk; (received, inserted, total in queue, account), None when not found."""
    async with conn.transaction():
        # NO KEY UPDATE, not SHARE: enqueue_idempotent UPDATEs this row in the transaction
        # (to_send), so a share lock would have to be upgraded, and two chunks of one
        # delivery holding it deadlocked. It still does not block the KEY SHARE lock that
        # the broad_log rows' foreign key takes.
        delivery = await get_delivery(conn, delivery_id, operator, lock="NO KEY UPDATE")
        if delivery is None:
            return None
        if delivery.state in ("cancelled", "done"):
            raise Conflict(f"delivery {delivery_id} is {delivery.state}: it takes no messages")
        if delivery.push_complete:
            raise Conflict(f"the push of delivery {delivery_id} was declared complete")
        received, inserted = await enqueue_idempotent(
            conn, delivery.id, delivery.account_id, messages
        )
        cursor = await conn.execute(
            "SELECT count(*) FROM mid.broad_log WHERE delivery_id = %s", (delivery.id,)
        )
        total = (await cursor.fetchone() or (0,))[0]
    return received, inserted, int(total), delivery.account


async def complete_push(
    conn: psycopg.AsyncConnection, delivery_id: int, operator: str, total: int
) -> DeliveryRow | None:
    """Declare the push complete after checking that `total` messages are queued."""
    async with conn.transaction():
        delivery = await get_delivery(conn, delivery_id, operator, lock="UPDATE")
        if delivery is None:
            return None
        cursor = await conn.execute(
            "SELECT count(*) FROM mid.broad_log WHERE delivery_id = %s", (delivery.id,)
        )
        queued = int((await cursor.fetchone() or (0,))[0])
        if queued != total:
            raise Conflict(
                f"delivery {delivery_id} has {queued} messages queued, not {total}: "
                "push the missing chunks again (already queued messages are skipped)"
            )
        await conn.execute(
            "UPDATE mid.delivery_sync SET pushed_total = %s, "
            "push_completed_at = coalesce(push_completed_at, now()) WHERE delivery_id = %s",
            (total, delivery.id),
        )
        await deliveries.complete_push(conn, delivery.id)
        row = await get_delivery(conn, delivery.id, operator)
    return row


async def change_state(
    conn: psycopg.AsyncConnection, delivery_id: int, operator: str, action: str
) -> DeliveryRow | None:
    """Pause, resume or cancel (repeating one is harmless); Conflict when not allowed
    (the moves: smsmta.queue.deliveries)."""
    if action not in deliveries.ACTIONS:
        raise KeyError(action)
    async with conn.transaction():
        delivery = await get_delivery(conn, delivery_id, operator, lock="UPDATE")
        if delivery is None:
            return None
        try:
            await deliveries.change_state(conn, delivery.id, action, delivery.state)
        except deliveries.NotAllowed:
            raise Conflict(
                f"delivery {delivery_id} is {delivery.state}: it cannot {action}"
            ) from None
        if action == "cancel":
            # messages not claimed yet end here; claimed ones finish their attempt
            await cancel_pending(conn, delivery.id)
        elif action == "resume":
            await conn.execute("SELECT pg_notify('smsmta_queue', %s)", (str(delivery.account_id),))
        row = await get_delivery(conn, delivery.id, operator)
    return row


_COUNTERS = """
SELECT status::text, failure_type::text, count(*) FROM mid.broad_log
WHERE delivery_id = %s GROUP BY 1, 2
"""


# The status pull returns the counters with every page, and counting a delivery's rows
# costs time in proportion to its size (about 0.5 s of PostgreSQL CPU at 500,000 rows):
# counted at every page, a big delivery's pulls made the cost grow with the square of its
# size (bench/e2e.py). So a count that took more than COUNT_CACHE_FROM seconds is reused
# by the pulls of this process for COUNT_REUSE times as long as it took, bounding the
# counting to about 1/COUNT_REUSE of a core per delivery; a count showing every message
# final is never reused (the `done` decision always counts afresh).
COUNT_CACHE_FROM = 0.05
COUNT_REUSE = 10.0
_counted: dict[int, tuple[float, float, Counters]] = {}  # delivery -> (at, reuse for, counters)


async def counters(conn: psycopg.AsyncConnection, delivery_id: int) -> Counters:
    cursor = await conn.execute(_COUNTERS, (delivery_id,))
    by = dict.fromkeys(
        (
            "pending",
            "sending",
            "sent",
            "delivered",
            "failed_hard",
            "failed_soft",
            "cancelled",
            "no_receipt",
        ),
        0,
    )
    total = 0
    for status, failure_type, count in await cursor.fetchall():
        total += count
        if status == "failed":
            by["failed_soft" if failure_type == "soft" else "failed_hard"] += count
        else:
            by[status] += count
    return Counters(total=total, **by)


async def recent_counters(conn: psycopg.AsyncConnection, delivery_id: int) -> Counters:
    """`counters`, or for a big delivery with unfinished messages a recent count of them."""
    now = time.monotonic()
    cached = _counted.get(delivery_id)
    if cached is not None and now - cached[0] < cached[1]:
        return cached[2]
    totals = await counters(conn, delivery_id)
    took = time.monotonic() - now
    unfinished = totals.pending + totals.sending + totals.sent
    if took > COUNT_CACHE_FROM and unfinished:
        if len(_counted) > 1000:  # forget the stale ones
            for key in [k for k, (at, reuse, _) in _counted.items() if now - at >= reuse]:
                del _counted[key]
        _counted[delivery_id] = (now, took * COUNT_REUSE, totals)
    else:
        _counted.pop(delivery_id, None)
    return totals


# A failure is reported by its message-log key ("SR <smsc> <stat> <err>|#MESSAGE#"), the
# normalised text the KPIs count by error; the full text stays in mid.broad_log.
# The page is taken from broad_log first (the index ix_broad_log_status_change on
# (delivery_id, status_xid, id), read in order and stopped at the LIMIT), and the message
# log is then looked up by primary key for the page's rows only (a scalar subquery, at
# most one row: the same as a LEFT JOIN on it). With the join and LIMIT at the same level
# the planner could hash-join and sort the whole rest of the delivery for each page
# (168-363 ms a page at 100,000 rows per delivery in bench/housekeeping.py); with a plain
# join after the subquery it could read the whole message log for each page.
_CHANGES = """
SELECT b.status_xid, b.id, b.marketing_message_id, b.status::text, b.failure_type::text,
       coalesce((SELECT m.key FROM mid.broad_log_msg m WHERE m.id = b.broad_log_msg_id),
                b.failure_reason),
       b.updated_at
FROM (SELECT b.status_xid, b.id, b.marketing_message_id, b.status, b.failure_type,
             b.failure_reason, b.updated_at, b.broad_log_msg_id
      FROM mid.broad_log b
      WHERE b.delivery_id = %(delivery)s AND b.status_xid > 0
        AND (b.status_xid, b.id) > (%(xid)s, %(id)s)
        AND b.status_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
      ORDER BY b.status_xid, b.id
      LIMIT %(limit)s) b
ORDER BY b.status_xid, b.id
"""


@dataclass(frozen=True)
class Pulled:
    changes: list[StatusChange]
    cursor: str
    more: bool
    lag_seconds: float
    counters: Counters
    state: DeliveryState


async def pull(
    conn: psycopg.AsyncConnection, delivery: DeliveryRow, cursor: str, limit: int
) -> Pulled:
    """One page of status changes after `cursor`, the counters, and the lag."""
    xid, row_id = parse_cursor(cursor)
    rows_cursor = await conn.execute(
        _CHANGES, {"delivery": delivery.id, "xid": xid, "id": row_id, "limit": limit + 1}
    )
    rows = await rows_cursor.fetchall()
    more = len(rows) > limit
    page = rows[:limit]
    changes = [
        StatusChange(
            id=row[2],
            status=MessageStatus(row[3]),
            failure_type=row[4],
            failure_reason=row[5],
            changed_at=row[6],
        )
        for row in page
        if row[2] is not None
    ]
    next_xid, next_id = (page[-1][0], page[-1][1]) if page else (xid, row_id)
    lag = 0.0
    if more:
        oldest: datetime = rows[limit][6]
        now_cursor = await conn.execute("SELECT now()")
        now = (await now_cursor.fetchone() or (oldest,))[0]
        lag = max(0.0, (now - oldest).total_seconds())
    totals = await recent_counters(conn, delivery.id)
    state = delivery.state
    async with conn.transaction():
        await conn.execute(
            "UPDATE mid.delivery_sync SET pulled_xid = %s, pulled_id = %s, pulled_at = now() "
            "WHERE delivery_id = %s",
            (xid, row_id, delivery.id),
        )
        unfinished = totals.pending + totals.sending + totals.sent
        if delivery.push_complete and unfinished == 0 and state == "running":
            await deliveries.finish(conn, delivery.id)
            state = "done"
    return Pulled(
        changes, format_cursor(next_xid, next_id), more, lag, totals, DeliveryState(state)
    )


_SYNC_LAG = """
SELECT coalesce(max(extract(epoch FROM now() - first.updated_at)), 0)
FROM mid.delivery d
JOIN mid.delivery_sync s ON s.delivery_id = d.id
CROSS JOIN LATERAL (
    SELECT b.updated_at FROM mid.broad_log b
    WHERE b.delivery_id = d.id AND b.status_xid > 0
      AND (b.status_xid, b.id) > (s.pulled_xid, s.pulled_id)
    ORDER BY b.status_xid, b.id LIMIT 1
) first
WHERE d.state IN ('pending', 'running', 'paused', 'cancelled')
   OR s.pulled_at IS NULL OR s.pulled_at > now() - interval '1 day'
"""


async def sync_lag(conn: psycopg.AsyncConnection) -> float:
    """Age in seconds of the oldest status change no marketing side has pulled yet."""
    cursor = await conn.execute(_SYNC_LAG)
    row = await cursor.fetchone()
    return float(row[0]) if row else 0.0
