"""The message log (SPEC section 7): each normalised failure text counted once per batch.

`record(conn, entries)` takes `(key, full text)` pairs — `SR <smsc> <stat> <err>|#MESSAGE#`
with its first `...|MESSAGE=<text>`, or `SUBMIT <smsc> <status>` for synchronous errors —
upserts one `mid.broad_log_msg` row per key (new ones `hard`, the full text kept from the
first time it was seen, the count increased by how many this batch brings) and returns
each key's row id and qualification, which decides retry or failure (smsmta.policy). Keys are
written in one sorted order, so that the MTA children and the SMS process, upserting the
same keys concurrently, never deadlock. The full text is kept with the receipt's `Text:`
preview (the start of the MT, personal data) replaced by its length, unless
logging.show_personal_data is on (smsmta.obs.mask_receipt_text).

`requalify(conn, qualification, entry_id)` is the operator's `smsmta message-log set`
(sms_process.admin): one entry becomes hard, soft or ignored; it applies to the failures
seen from then on (the MTA's writer and the SMS process read the qualification at each
failure), on the caller's synchronous connection.

Touches: the database (`mid.broad_log_msg`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import psycopg

from smsmta import obs
from smsmta.db import FailureType

UPSERT = """
INSERT INTO mid.broad_log_msg AS m (key, first_text, count, last_seen_at)
SELECT key, text, n, now() FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS v(key, text, n)
ON CONFLICT (key) DO UPDATE SET count = m.count + EXCLUDED.count, last_seen_at = now()
RETURNING id, key, qualification::text
"""

SET_QUALIFICATION = """
UPDATE mid.broad_log_msg SET qualification = %s::mid.failure_type WHERE id = %s
RETURNING id, qualification::text, count, key, first_text, last_seen_at
"""


async def record(
    conn: psycopg.AsyncConnection, entries: Iterable[tuple[str, str]]
) -> dict[str, tuple[int, FailureType]]:
    """Count the (key, full text) entries; return key -> (broad_log_msg id, qualification)."""
    counts: Counter[str] = Counter()
    first_text: dict[str, str] = {}
    for key, text in entries:
        counts[key] += 1
        if key not in first_text:
            first_text[key] = obs.mask_receipt_text(text)
    if not counts:
        return {}
    keys = sorted(counts)  # one lock order everywhere: no deadlock between writers
    cursor = await conn.execute(
        UPSERT, (keys, [first_text[key] for key in keys], [counts[key] for key in keys])
    )
    return {key: (msg_id, FailureType(qual)) for msg_id, key, qual in await cursor.fetchall()}


def requalify(
    conn: psycopg.Connection, qualification: FailureType, entry_id: int
) -> tuple[int, str, int, str, str, datetime] | None:
    """Set one entry's qualification; its row (id, qualification, count, key, first text,
    last seen at), or None when there is no such entry."""
    return conn.execute(SET_QUALIFICATION, (qualification.value, entry_id)).fetchone()
