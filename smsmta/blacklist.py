"""The per-short-code blacklists (SPEC section 4): the one writer of `mid.short_code_blacklist`.

An entry says that an address asked a short code to stop; it applies to that short code
only. Entries are stored in the forms the MTA's claim compares (smsmta.queue.claims):
the short code as its scope, smsmta.numbers.sender_key (a short code's digits, a long
number canonical), and the address canonical (`+<E.164 digits>`, smsmta.numbers.canonical).
The callers put them in those forms, each by its own rule (an MO sender that cannot be
canonicalised is kept as received: it matches nothing queued):

- the SMS process's auto-reply rules (sms_process.mo): a `blacklist` / `unblacklist`
  keyword MO adds or removes its sender for the short code it was sent to
  (`add_by_keyword`, `remove_by_keyword`), one statement in the MO batch's transaction;
  the keyword is kept as the reason;
- the operator's `smsmta blacklist add|remove` (sms_process.admin): many numbers for one
  short code (`add`, `remove`), one statement, returning how many rows changed; a number
  that cannot be canonicalised refuses the whole command before anything is written.

Adding an entry already there changes nothing (the first reason and date stay); removing
one that is not there is no error. The reason is cut to the column's 64 characters.

Touches: the database through the caller's connection and transaction
(`mid.short_code_blacklist`), nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

REASON_LENGTH = 64

ADD = """
INSERT INTO mid.short_code_blacklist (short_code, address, reason)
SELECT %s, address, %s FROM unnest(%s::text[]) AS address
ON CONFLICT (short_code, address) DO NOTHING
"""
REMOVE = """
DELETE FROM mid.short_code_blacklist WHERE short_code = %s AND address = ANY(%s)
"""
ADD_ONE = """
INSERT INTO mid.short_code_blacklist (short_code, address, reason) VALUES (%s, %s, %s)
ON CONFLICT (short_code, address) DO NOTHING
"""
REMOVE_ONE = "DELETE FROM mid.short_code_blacklist WHERE short_code = %s AND address = %s"


def add(conn: psycopg.Connection, scope: str, addresses: Sequence[str], reason: str) -> int:
    """Blacklist the (canonical) addresses for the scope; how many entries were added."""
    return conn.execute(ADD, (scope, reason[:REASON_LENGTH], list(addresses))).rowcount


def remove(conn: psycopg.Connection, scope: str, addresses: Sequence[str]) -> int:
    """Lift the addresses' blacklisting for the scope; how many entries were removed."""
    return conn.execute(REMOVE, (scope, list(addresses))).rowcount


async def add_by_keyword(
    conn: psycopg.AsyncConnection, scope: str, address: str, keyword: str
) -> None:
    """A `blacklist` rule's MO: its sender stops receiving from the scope."""
    await conn.execute(ADD_ONE, (scope, address, keyword[:REASON_LENGTH]))


async def remove_by_keyword(conn: psycopg.AsyncConnection, scope: str, address: str) -> None:
    """An `unblacklist` rule's MO: its sender receives from the scope again."""
    await conn.execute(REMOVE_ONE, (scope, address))
