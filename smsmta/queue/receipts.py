"""Receipt outcomes: what the SMS process's reconciliation reads and writes in the queue.

The reconciler (sms_process.receipts) reads the receipts and decides (smsmta.policy); this
module holds the statements it runs, one per kind and per batch (arrays through
`unnest`, the history by COPY), never one per receipt:

- `match`: the MT parts the receipts' ids name in `mid.provider_msg_id` (the newest row
  when a provider reuses ids), with their message and delivery, the messages locked;
- `part_outcomes`: for all_parts, the part receipts of the current attempt recorded;
- `record_delivered`: sent -> delivered (`receipt_delivered`);
- `record_failed`: sent -> failed (`receipt_failed`), with the failure type, reason and
  message-log row (smsmta.queue.message_log);
- `record_retry`: sent -> pending (`receipt_retry`), due again at the given time, the
  try counted (retry_count);
- `copy_history`: every receipt done with into `mid.receipt` (the message's history);
- `delete_handled`: the inbox rows done with; `try_again_at`: the others (a receipt whose
  MT is not recorded yet) tried again later, their attempts counted.
The transitions are rows of smsmta.queue.states. The delivery counters the changes add
to are smsmta.queue.kpis's.

What callers must hold:
- The transaction. Each function runs on the caller's connection inside the caller's
  open transaction (a batch's) and commits nothing.
- The locks, `match` first. It locks the messages (in id order: no deadlock between two
  batches) and reads them as the last commit left them: a batch running beside this one
  (the SMS process's work loops) that touches the same message waits for this one's
  commit, then sees what it did. Every update is guarded by status = 'sent' besides and
  returns the ids it changed, so the caller counts only what changed.
- Which attempt: the MTA writes a part's provider_msg_id and the message's `sent_at` in
  one transaction (same now(), smsmta.queue.outcomes), so a provider_msg_id older than
  `sent_at` belongs to an earlier attempt (`part_outcomes` reads only the current one's).

Touches: the database (`mid.provider_msg_id`, `mid.broad_log`, `mid.delivery` read,
`mid.receipt`, `mid.inbox`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from smsmta.db import FailureType

MATCH = """
SELECT m.ord, m.broad_log_id, m.part_no, m.created_at, b.status::text,
       b.parts, b.sent_at, b.retry_count, b.delivery_id, d.validity_end, d.created_at
FROM (SELECT DISTINCT ON (v.ord) v.ord, p.broad_log_id, p.part_no, p.created_at
      FROM unnest(%b::int[], %b::text[]) WITH ORDINALITY AS v(account_id, provider_id, ord)
      JOIN mid.provider_msg_id p
        ON p.account_id = v.account_id AND p.provider_id = v.provider_id
      ORDER BY v.ord, p.created_at DESC) AS m
JOIN mid.broad_log b ON b.id = m.broad_log_id
JOIN mid.delivery d ON d.id = b.delivery_id
ORDER BY b.id
FOR UPDATE OF b
"""

PART_RECEIPTS = """
SELECT r.broad_log_id, r.part_no, r.outcome::text
FROM mid.receipt r JOIN mid.broad_log b ON b.id = r.broad_log_id
WHERE r.broad_log_id = ANY(%b) AND r.result = 'part' AND r.mt_sent_at >= b.sent_at
"""


DELIVERED = """
UPDATE mid.broad_log b SET status = 'delivered', final_at = now(), updated_at = now()
FROM unnest(%b::bigint[]) AS v(id)
WHERE b.id = v.id AND b.status = 'sent'
RETURNING b.id
"""

FAILED = """
UPDATE mid.broad_log b
SET status = 'failed', failure_type = v.type::mid.failure_type, failure_reason = v.reason,
    broad_log_msg_id = v.msg, final_at = now(), updated_at = now()
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::bigint[]) AS v(id, type, reason, msg)
WHERE b.id = v.id AND b.status = 'sent'
RETURNING b.id
"""

RETRY = """
UPDATE mid.broad_log b
SET status = 'pending', next_try_at = v.at, retry_count = b.retry_count + 1,
    failure_type = 'soft', failure_reason = v.reason, broad_log_msg_id = v.msg,
    updated_at = now()
FROM unnest(%b::bigint[], %b::timestamptz[], %b::text[], %b::bigint[]) AS v(id, at, reason, msg)
WHERE b.id = v.id AND b.status = 'sent'
RETURNING b.id
"""

COPY_RECEIPTS = (
    "COPY mid.receipt (account_id, provider_id, broad_log_id, part_no, mt_sent_at, stat, err, "
    "outcome, result, text, note, received_at) FROM STDIN (FORMAT BINARY)"
)
# binary COPY: no text escaping of each value; enums travel as their labels' text
RECEIPT_TYPES = (
    "int4", "text", "int8", "int2", "timestamptz", "text", "text", "text", "text", "text",
    "text", "timestamptz",
)  # fmt: skip

DELETE_INBOX = "DELETE FROM mid.inbox WHERE id = ANY(%b)"

WAIT_INBOX = """
UPDATE mid.inbox SET attempts = attempts + 1, next_try_at = %b WHERE id = ANY(%b)
"""

#: one receipt's history row, in COPY_RECEIPTS's column order
History = tuple[Any, ...]


class Failed(NamedTuple):
    """A sent message a receipt failed for good (msg_id: its message-log row)."""

    id: int
    failure_type: FailureType
    reason: str
    msg_id: int


class Retry(NamedTuple):
    """A sent message a receipt sends back to the queue, due at `at`."""

    id: int
    at: datetime
    reason: str
    msg_id: int


async def match(
    conn: psycopg.AsyncConnection, account_ids: Sequence[int], provider_ids: Sequence[str]
) -> list[tuple[Any, ...]]:
    """The MT parts the (account id, provider id) pairs name, their messages locked.

    One row per pair matched, in message id order: (ordinal of the pair, from 1,
    broad_log id, part_no, the part's provider_msg_id created_at, status, parts, sent_at,
    retry_count, delivery id, the delivery's validity_end and created_at)."""
    # binary results: timestamps arrive as numbers, not text to parse
    async with conn.cursor(binary=True) as cursor:
        await cursor.execute(MATCH, (account_ids, provider_ids))
        return await cursor.fetchall()


async def part_outcomes(
    conn: psycopg.AsyncConnection, broad_log_ids: Sequence[int]
) -> list[tuple[int, int, str]]:
    """(broad_log id, part_no, outcome) of the part receipts of the messages' current attempt."""
    cursor = await conn.execute(PART_RECEIPTS, (broad_log_ids,))
    return await cursor.fetchall()


async def _changed(conn: psycopg.AsyncConnection, query: str, arrays: tuple[Any, ...]) -> set[int]:
    cursor = await conn.execute(query, arrays)
    return {row[0] for row in await cursor.fetchall()}


async def record_delivered(conn: psycopg.AsyncConnection, ids: Sequence[int]) -> set[int]:
    """sent -> delivered; return the ids changed (the others were no longer sent)."""
    return await _changed(conn, DELIVERED, (ids,))


async def record_failed(conn: psycopg.AsyncConnection, rows: Sequence[Failed]) -> set[int]:
    """sent -> failed; return the ids changed (the others were no longer sent)."""
    return await _changed(
        conn,
        FAILED,
        (
            [row.id for row in rows],
            [row.failure_type.value for row in rows],
            [row.reason for row in rows],
            [row.msg_id for row in rows],
        ),
    )


async def record_retry(conn: psycopg.AsyncConnection, rows: Sequence[Retry]) -> set[int]:
    """sent -> pending, due at each row's `at`; return the ids changed."""
    return await _changed(
        conn,
        RETRY,
        (
            [row.id for row in rows],
            [row.at for row in rows],
            [row.reason for row in rows],
            [row.msg_id for row in rows],
        ),
    )


async def copy_history(conn: psycopg.AsyncConnection, rows: Sequence[History]) -> None:
    """COPY the receipts done with into `mid.receipt` (one binary COPY; none: no round trip)."""
    if not rows:
        return
    async with conn.cursor() as cursor, cursor.copy(COPY_RECEIPTS) as copy:
        copy.set_types(RECEIPT_TYPES)
        for values in rows:
            await copy.write_row(values)


async def delete_handled(conn: psycopg.AsyncConnection, inbox_ids: Sequence[int]) -> None:
    """Delete the inbox rows done with."""
    await conn.execute(DELETE_INBOX, (inbox_ids,))


async def try_again_at(
    conn: psycopg.AsyncConnection, inbox_ids: Sequence[int], at: datetime
) -> None:
    """Leave the inbox rows for another try at `at`, their attempts counted."""
    await conn.execute(WAIT_INBOX, (at, inbox_ids))
