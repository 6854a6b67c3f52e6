"""Submit outcomes: what the SMSC answered to claimed messages, written into the queue.

The MTA's outcome writer (mta.writer) decides and batches; this module holds the
statements it runs, one per kind of outcome and per batch (arrays through `unnest`, the
provider ids by COPY), never one per message:

- `copy_provider_ids`: every part's provider message id into `mid.provider_msg_id`;
- `record_sent`: sending -> sent (`submit_ok`), the parts counted;
- `record_failed`: sending -> failed (`submit_failed`), with the failure type, reason and
  message-log row (smsmta.queue.message_log);
- `record_retry`: sending -> pending (`submit_retry`), due again at the given time; a
  message handed back unsent (shutdown, no bind up) is not counted as a try;
- `count_outcomes`: the delivery KPIs (`sent`, `failed_hard`, `failed_soft`) incremented.
The transitions are rows of smsmta.queue.states; every update clears `lease_owner` and
keeps a message's possible-duplicate flag once set.

What callers must hold:
- The lease. Rows are taken only if still claimed under `owner` (`lease_owner`): a row
  another child reclaimed when this one's lease expired is left alone (it will go out
  again). `record_sent` and `record_failed` say which rows they changed, so that the
  caller can count the others (lost) and the KPIs count only what changed.
- The transaction. Each function runs on the caller's connection inside the caller's
  open transaction (the writer's, one a batch) and commits nothing. The provider ids and
  the `sent` update go in the same transaction, so they share now(): a receipt whose
  provider_msg_id is older than the message's `sent_at` belongs to an earlier attempt
  (sms_process.receipts relies on it).
- Counters last. `count_outcomes` runs after the updates, because it counts the rows
  they changed, and last in the transaction, so the delivery row (which every message of
  the delivery, every child's writer and the receipts update) stays locked only until the
  commit; deliveries in id order, one lock order, so concurrent writers never deadlock.

Touches: the database (`mid.provider_msg_id`, `mid.broad_log`, `mid.delivery`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import psycopg

from smsmta.db import FailureType

SENT = """
UPDATE mid.broad_log b
SET status = 'sent', parts = v.parts, sent_at = now(), updated_at = now(), lease_owner = NULL,
    possible_duplicate = b.possible_duplicate OR v.dup
FROM unnest(%(ids)s::bigint[], %(parts)s::smallint[], %(dup)s::boolean[]) AS v(id, parts, dup)
WHERE b.id = v.id AND b.lease_owner = %(owner)s
RETURNING b.id
"""

FAILED = """
UPDATE mid.broad_log b
SET status = 'failed', failure_type = v.type::mid.failure_type, failure_reason = v.reason,
    broad_log_msg_id = v.msg, final_at = now(), updated_at = now(), lease_owner = NULL,
    parts = v.parts, possible_duplicate = b.possible_duplicate OR v.dup
FROM unnest(%(ids)s::bigint[], %(types)s::text[], %(reasons)s::text[], %(msgs)s::bigint[],
            %(parts)s::smallint[], %(dup)s::boolean[]) AS v(id, type, reason, msg, parts, dup)
WHERE b.id = v.id AND b.lease_owner = %(owner)s
RETURNING b.id, b.delivery_id, v.type
"""

RETRY = """
UPDATE mid.broad_log b
SET status = 'pending', next_try_at = v.at, retry_count = b.retry_count + v.counted,
    failure_type = 'soft', failure_reason = v.reason, broad_log_msg_id = v.msg,
    updated_at = now(), lease_owner = NULL, possible_duplicate = b.possible_duplicate OR v.dup
FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[], %(counted)s::smallint[],
            %(reasons)s::text[], %(msgs)s::bigint[], %(dup)s::boolean[])
     AS v(id, at, counted, reason, msg, dup)
WHERE b.id = v.id AND b.lease_owner = %(owner)s
"""


KPIS = """
UPDATE mid.delivery d
SET sent = d.sent + v.sent, failed_hard = d.failed_hard + v.hard,
    failed_soft = d.failed_soft + v.soft, updated_at = now()
FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::int[]) AS v(id, sent, hard, soft)
WHERE d.id = v.id
"""

COPY_PROVIDER_IDS = (
    "COPY mid.provider_msg_id (account_id, provider_id, broad_log_id, delivery_id, part_no) "
    "FROM STDIN"
)

#: one part's provider id: (account_id, provider_id, broad_log_id, delivery_id, part_no)
ProviderId = tuple[int, str | None, int, int, int]


class Sent(NamedTuple):
    """A message every part of which the SMSC accepted."""

    id: int
    parts: int
    possible_duplicate: bool


class Failed(NamedTuple):
    """A message that failed for good (msg_id: its message-log row, if any)."""

    id: int
    failure_type: FailureType
    reason: str
    msg_id: int | None
    parts: int
    possible_duplicate: bool


class Retry(NamedTuple):
    """A message back to the queue, due at `at`; `counted`: the try counts (retry_count)."""

    id: int
    at: datetime
    counted: bool
    reason: str
    msg_id: int | None
    possible_duplicate: bool


async def copy_provider_ids(conn: psycopg.AsyncConnection, rows: Iterable[ProviderId]) -> None:
    """COPY the parts' provider ids into `mid.provider_msg_id` (one COPY)."""
    async with conn.cursor() as cursor, cursor.copy(COPY_PROVIDER_IDS) as copy:
        for row in rows:
            await copy.write_row(row)


async def record_sent(conn: psycopg.AsyncConnection, owner: str, rows: Sequence[Sent]) -> set[int]:
    """sending -> sent for the rows still claimed by `owner`; return the ids changed."""
    cursor = await conn.execute(
        SENT,
        {
            "ids": [row.id for row in rows],
            "parts": [row.parts for row in rows],
            "dup": [row.possible_duplicate for row in rows],
            "owner": owner,
        },
    )
    return {found[0] for found in await cursor.fetchall()}


async def record_failed(
    conn: psycopg.AsyncConnection, owner: str, rows: Sequence[Failed]
) -> list[tuple[int, FailureType]]:
    """sending -> failed for the rows still claimed by `owner`; return (delivery id,
    failure type) of each row changed."""
    cursor = await conn.execute(
        FAILED,
        {
            "ids": [row.id for row in rows],
            "types": [row.failure_type.value for row in rows],
            "reasons": [row.reason for row in rows],
            "msgs": [row.msg_id for row in rows],
            "parts": [row.parts for row in rows],
            "dup": [row.possible_duplicate for row in rows],
            "owner": owner,
        },
    )
    return [(delivery_id, FailureType(kind)) for _, delivery_id, kind in await cursor.fetchall()]


async def record_retry(conn: psycopg.AsyncConnection, owner: str, rows: Sequence[Retry]) -> None:
    """sending -> pending, due at each row's `at`, for the rows still claimed by `owner`."""
    await conn.execute(
        RETRY,
        {
            "ids": [row.id for row in rows],
            "at": [row.at for row in rows],
            "counted": [1 if row.counted else 0 for row in rows],
            "reasons": [row.reason for row in rows],
            "msgs": [row.msg_id for row in rows],
            "dup": [row.possible_duplicate for row in rows],
            "owner": owner,
        },
    )


async def count_outcomes(
    conn: psycopg.AsyncConnection, counts: Mapping[int, Sequence[int]]
) -> None:
    """Add to each delivery's KPIs: delivery id -> (sent, failed_hard, failed_soft).

    Run it last in the transaction (see the module docstring)."""
    if not counts:
        return
    ids = sorted(counts)  # one lock order everywhere: no deadlock between writers
    await conn.execute(
        KPIS,
        (
            ids,
            [counts[i][0] for i in ids],
            [counts[i][1] for i in ids],
            [counts[i][2] for i in ids],
        ),
    )
