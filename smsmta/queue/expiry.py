"""The end of the wait for receipts: a message whose receipt never came becomes final.

A message the SMSC acknowledged (`sent`) waits for its receipt. Some never come (the
provider lost it, the account does not really send them, a part's receipt went to another
platform). Without an end such a message stays `sent` for ever: never final, never in the
final KPIs, never purged. The wait ends with the delivery's validity period (its
`validity_end`, else `created_at + mta.default_validity`) plus `receipt_match_wait` (a
receipt that arrived before its MT was recorded is retried that long): past that no
receipt can be applied anyway, and the SMSC itself has given up on the message.

`close_receipts` takes the deliveries past that point whose receipts are still open,
turns their messages still `sent` into `no_receipt` (final, `final_at` set: the purge
takes them after `broad_log_retention`, once the marketing side pulled the change),
adds them to the delivery's `no_receipt` KPI and marks the delivery closed
(`receipts_closed_at`), so it is never scanned again. Bounded statements (`batch` rows
each), each its own transaction; a receipt arriving later finds the message final and is
recorded as a duplicate (sms_process.receipts). The transition (smsmta.queue.states):
sent -> no_receipt. Touches: the database (`mid.delivery`, `mid.broad_log`).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

DUE = """
SELECT d.id, d.account_id FROM mid.delivery d
WHERE d.receipts_closed_at IS NULL
  AND coalesce(d.validity_end, d.created_at + make_interval(secs => %(default_validity)s))
      + make_interval(secs => %(wait)s) < now()
ORDER BY d.id
LIMIT %(deliveries)s
"""

EXPIRE = """
WITH expired AS (
    UPDATE mid.broad_log SET status = 'no_receipt', final_at = now(), updated_at = now()
    WHERE id = ANY(ARRAY(
        SELECT id FROM mid.broad_log WHERE delivery_id = %(delivery)s AND status = 'sent'
        LIMIT %(batch)s))
      AND status = 'sent'
    RETURNING 1
)
UPDATE mid.delivery SET no_receipt = no_receipt + (SELECT count(*) FROM expired),
                        updated_at = now()
WHERE id = %(delivery)s
RETURNING (SELECT count(*) FROM expired)
"""

CLOSE = "UPDATE mid.delivery SET receipts_closed_at = now() WHERE id = %s"


@dataclass(frozen=True)
class Closed:
    """One delivery whose wait for receipts ended, and how many messages had none."""

    delivery_id: int
    account_id: int
    no_receipt: int


async def close_receipts(
    conn: psycopg.AsyncConnection,
    *,
    default_validity: float,
    wait: float,
    batch: int = 10_000,
    deliveries: int = 100,
) -> list[Closed]:
    """End the wait for receipts of the deliveries past validity + wait (autocommit `conn`)."""
    cursor = await conn.execute(
        DUE, {"default_validity": default_validity, "wait": wait, "deliveries": deliveries}
    )
    closed = []
    for delivery_id, account_id in await cursor.fetchall():
        total = 0
        while True:
            async with conn.transaction():
                cursor = await conn.execute(EXPIRE, {"delivery": delivery_id, "batch": batch})
                row = await cursor.fetchone()
                expired = int(row[0]) if row else 0
                total += expired
                if expired < batch:
                    await conn.execute(CLOSE, (delivery_id,))
                    break
        closed.append(Closed(delivery_id, account_id, total))
    return closed
