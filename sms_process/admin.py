"""Operator queries behind `smsmta receipts unmatched`, `smsmta message-log list|set` and
`smsmta blacklist add|remove|list`.

- `unmatched_receipts`: receipts kept as unmatched (no MT within the match wait) or
  invalid (no readable id), newest first, with the account name;
- `message_log`: the message log (SPEC section 7), most frequent first;
- `set_qualification`: requalify one message-log entry (hard, soft, ignored), through
  the message log's owner (smsmta.queue.message_log.requalify); it applies to the
  failures seen from then on;
- `blacklist_add` / `blacklist_remove` / `blacklist`: the per-short-code blacklists
  (SPEC section 4), every number put in the canonical form first (smsmta.numbers, with
  the default country given) and the short code in its scope form (`sender_key`), the
  forms the SMS process stores and the MTA's claim compares; a number that cannot be
  canonicalised refuses the whole command (BlacklistError naming it), nothing changed.
  The changes are the blacklist owner's (smsmta.blacklist `add`, `remove`).

Synchronous psycopg, one short transaction each. Reads the database (`mid.receipt`,
`mid.external_account`, `mid.broad_log_msg`, `mid.short_code_blacklist`); writes only
through the tables' owners.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from smsmta import blacklist as blacklist_table
from smsmta.db import FailureType
from smsmta.numbers import NumberError, canonical, sender_key
from smsmta.queue.message_log import requalify

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
    failure_type = FailureType(qualification)  # raises ValueError naming the value
    with psycopg.connect(dsn) as conn:
        row = requalify(conn, failure_type, entry_id)
    return MessageLogEntry(*row) if row else None


BLACKLIST = """
SELECT short_code, address, reason, since FROM mid.short_code_blacklist
WHERE (%(short_code)s::text IS NULL OR short_code = %(short_code)s)
  AND (%(address)s::text IS NULL OR address = %(address)s)
ORDER BY since DESC, short_code, address
LIMIT %(limit)s
"""


class BlacklistError(ValueError):
    """A blacklist command that cannot be done; the message says why."""


@dataclass(frozen=True)
class BlacklistEntry:
    short_code: str
    address: str
    reason: str
    since: datetime


def _scope(short_code: str, default_country: str) -> str:
    scope = sender_key(short_code, default_country=default_country)
    if not scope:
        raise BlacklistError("give the short code (or number) the STOP was sent to")
    return scope


def canonical_numbers(numbers: list[str], default_country: str = "") -> list[str]:
    """The numbers in the canonical form; BlacklistError naming every one that cannot be."""
    done: list[str] = []
    bad: list[str] = []
    for number in numbers:
        try:
            done.append(canonical(number, default_country=default_country))
        except NumberError as error:
            bad.append(f"{number!r}: {error}")
    if bad:
        raise BlacklistError("not a mobile number: " + "; ".join(bad))
    return list(dict.fromkeys(done))


def blacklist_add(
    dsn: str, short_code: str, numbers: list[str], reason: str = "", default_country: str = ""
) -> tuple[str, list[str], int]:
    """Blacklist the numbers for the short code; (scope, canonical numbers, rows added)."""
    scope = _scope(short_code, default_country)
    addresses = canonical_numbers(numbers, default_country)
    with psycopg.connect(dsn) as conn:
        added = blacklist_table.add(conn, scope, addresses, reason)
    return scope, addresses, added


def blacklist_remove(
    dsn: str, short_code: str, numbers: list[str], default_country: str = ""
) -> tuple[str, list[str], int]:
    """Lift the numbers' blacklisting for the short code; (scope, numbers, rows removed)."""
    scope = _scope(short_code, default_country)
    addresses = canonical_numbers(numbers, default_country)
    with psycopg.connect(dsn) as conn:
        removed = blacklist_table.remove(conn, scope, addresses)
    return scope, addresses, removed


def blacklist(
    dsn: str,
    short_code: str | None = None,
    number: str | None = None,
    limit: int = 100,
    default_country: str = "",
) -> list[BlacklistEntry]:
    """Blacklist entries, newest first, of one short code and/or one number."""
    params = {
        "short_code": _scope(short_code, default_country) if short_code else None,
        "address": canonical_numbers([number], default_country)[0] if number else None,
        "limit": limit,
    }
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(BLACKLIST, params).fetchall()
    return [BlacklistEntry(*row) for row in rows]
