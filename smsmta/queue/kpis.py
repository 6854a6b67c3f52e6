"""A delivery's outcome counters (`mid.delivery` KPIs): which final state feeds which column.

`COUNTERS` is the one definition: a message delivered counts in `delivered`, one ended
`no_receipt` in `no_receipt`, one failed in `failed_hard` or `failed_soft` after its
failure type (a failure the operators qualified `ignored` counts in neither; nor does a
cancelled message). Both ways the counters move are derived from it:

- increments, in the transaction that changes the messages (`add_receipt_counts`: the
  receipts of accounts with real-time KPIs, sms_process.receipts, by `column_of`);
- the recount (`recount`): for accounts without real-time KPIs the SMS process marks the
  deliveries receipts changed and recounts their counters from `mid.broad_log` every
  kpi_sync_period. The delivery rows are locked first (in id order), so the MTA's
  increments of the same rows wait for the commit and none is lost.

Counters last: run either at the end of the caller's transaction, because the delivery
row (which every message of the delivery, every MTA child's writer and the receipts
update) stays locked until the commit; deliveries in id order, one lock order, so
concurrent writers never deadlock.

Not from this table yet: the MTA's submit outcomes (`sent`, `failed_hard`, `failed_soft`,
smsmta.queue.outcomes) and the end of the wait for receipts (`no_receipt`,
smsmta.queue.expiry) increment with statements of their own.

Each function runs on the caller's connection in the caller's transaction and commits
nothing. Touches: the database (`mid.delivery`; `mid.broad_log` read by the recount).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import psycopg

from smsmta.db import FailureType, MessageStatus


class Counted(NamedTuple):
    """Messages in `status` (of `failure_type`, None: any) count in `column`."""

    column: str
    status: MessageStatus
    failure_type: FailureType | None = None

    def condition(self) -> str:
        """The SQL condition on a `mid.broad_log` row that counts it here."""
        found = f"status = '{self.status.value}'"
        if self.failure_type is not None:
            found += f" AND failure_type = '{self.failure_type.value}'"
        return found


COUNTERS: tuple[Counted, ...] = (
    Counted("delivered", MessageStatus.DELIVERED),
    Counted("no_receipt", MessageStatus.NO_RECEIPT),
    Counted("failed_hard", MessageStatus.FAILED, FailureType.HARD),
    Counted("failed_soft", MessageStatus.FAILED, FailureType.SOFT),
)

#: the counters a receipt moves: it ends a message delivered or failed
BY_RECEIPT: tuple[Counted, ...] = tuple(
    counted
    for counted in COUNTERS
    if counted.status in (MessageStatus.DELIVERED, MessageStatus.FAILED)
)


def column_of(status: MessageStatus, failure_type: FailureType | None = None) -> str | None:
    """The counter a message now in `status` (failed: of `failure_type`) adds to, if any."""
    for counted in COUNTERS:
        if counted.status == status and counted.failure_type in (None, failure_type):
            return counted.column
    return None


def _increments(counters: Sequence[Counted]) -> str:
    names = [counted.column for counted in counters]
    added = ", ".join(f"{name} = d.{name} + v.{name}" for name in names)
    arrays = ", ".join(["%b::bigint[]"] + ["%b::int[]"] * len(names))
    return f"""
UPDATE mid.delivery d
SET {added}, updated_at = now()
FROM unnest({arrays}) AS v(id, {", ".join(names)})
WHERE d.id = v.id
"""


def _recount(counters: Sequence[Counted]) -> str:
    names = [counted.column for counted in counters]
    counts = ",\n".join(
        f"             count(*) FILTER (WHERE {counted.condition()}) AS {counted.column}"
        for counted in counters
    )
    return f"""
UPDATE mid.delivery d
SET {", ".join(f"{name} = c.{name}" for name in names)}, updated_at = now()
FROM (SELECT delivery_id,
{counts}
      FROM mid.broad_log WHERE delivery_id = ANY(%s) GROUP BY delivery_id) AS c
WHERE d.id = c.delivery_id
"""


#: the receipts' increments: delivery ids, then one array per column of BY_RECEIPT
KPIS = _increments(BY_RECEIPT)

LOCK_DELIVERIES = "SELECT id FROM mid.delivery WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
#: every counter of COUNTERS recounted from the messages, for the deliveries given
RECOUNT = _recount(COUNTERS)


async def add_receipt_counts(
    conn: psycopg.AsyncConnection, counts: Mapping[int, Mapping[str, int]]
) -> None:
    """Add to each delivery's counters: delivery id -> {column of BY_RECEIPT: messages}.

    One statement for the batch; run it last in the transaction (module docstring)."""
    if not counts:
        return
    ids = sorted(counts)  # one lock order everywhere: no deadlock between writers
    await conn.execute(
        KPIS,
        (ids, *([counts[i].get(c.column, 0) for i in ids] for c in BY_RECEIPT)),
    )


async def recount(conn: psycopg.AsyncConnection, delivery_ids: Sequence[int]) -> None:
    """Lock the deliveries (in id order), then recount their counters from their messages.

    In the caller's transaction: the MTA's increments wait for its commit, none is lost."""
    ids = sorted(delivery_ids)
    await conn.execute(LOCK_DELIVERIES, (ids,))
    await conn.execute(RECOUNT, (ids,))
