"""Operator queries behind `smsmta receipts unmatched` and `smsmta message-log list|set`.

- `unmatched_receipts`: receipts kept as unmatched (no MT within the match wait) or
  invalid (no readable id), newest first, with the account name;
- `message_log`: the message log (SPEC section 7), most frequent first;
- `set_qualification`: requalify one message-log entry (hard, soft, ignored); it applies
  to the failures seen from then on (the MTA's writer and the SMS process read the
  qualification at each failure).

Synchronous psycopg, one short transaction each. Touches: the database (`mid.receipt`,
`mid.external_account`, `mid.broad_log_msg`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from smsmta.db import FailureType

UNMATCHED = """
SELECT r.id, coalesce(a.internal_name, '#' || r.account_id), r.provider_id, r.stat, r.err,
       r.result::text, r.received_at, r.note, r.text
FROM mid.receipt r LEFT JOIN mid.external_account a ON a.id = r.account_id
WHERE r.result IN ('unmatched', 'invalid') AND (%(account)s::text IS NULL
                                                  OR a.internal_name = %(account)s)
ORDER BY r.received_at DESC, r.id DESC
LIMIT %(limit)s
"""

UNMATCHED_COUNT = """
SELECT count(*) FROM mid.receipt r LEFT JOIN mid.external_account a ON a.id = r.account_id
WHERE r.result IN ('unmatched', 'invalid') AND (%(account)s::text IS NULL
                                                  OR a.internal_name = %(account)s)
"""

MESSAGE_LOG = """
SELECT id, qualification::text, count, key, first_text, last_seen_at FROM mid.broad_log_msg
WHERE %(qualification)s::text IS NULL OR qualification::text = %(qualification)s
ORDER BY count DESC, id
LIMIT %(limit)s
"""

SET_QUALIFICATION = """
UPDATE mid.broad_log_msg SET qualification = %s::mid.failure_type WHERE id = %s
RETURNING id, qualification::text, count, key, first_text, last_seen_at
"""


@dataclass(frozen=True)
class UnmatchedReceipt:
    id: int
    account: str
    provider_id: str | None
    stat: str | None
    err: str | None
    result: str
    received_at: datetime
    note: str | None
    text: str


@dataclass(frozen=True)
class MessageLogEntry:
    id: int
    qualification: str
    count: int
    key: str
    first_text: str
    last_seen_at: datetime


def unmatched_receipts(
    dsn: str, account: str | None = None, limit: int = 50
) -> tuple[int, list[UnmatchedReceipt]]:
    """(how many in all, the newest `limit`) of the unmatched and invalid receipts."""
    params = {"account": account, "limit": limit}
    with psycopg.connect(dsn) as conn:
        total = conn.execute(UNMATCHED_COUNT, params).fetchone()
        rows = conn.execute(UNMATCHED, params).fetchall()
    return (total[0] if total else 0), [UnmatchedReceipt(*row) for row in rows]


def message_log(
    dsn: str, qualification: str | None = None, limit: int = 100
) -> list[MessageLogEntry]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            MESSAGE_LOG, {"qualification": qualification, "limit": limit}
        ).fetchall()
    return [MessageLogEntry(*row) for row in rows]


def set_qualification(dsn: str, qualification: str, entry_id: int) -> MessageLogEntry | None:
    """Requalify one entry; None when there is no such entry. ValueError for a bad type."""
    FailureType(qualification)  # raises ValueError naming the value
    with psycopg.connect(dsn) as conn:
        row = conn.execute(SET_QUALIFICATION, (qualification, entry_id)).fetchone()
    return MessageLogEntry(*row) if row else None
