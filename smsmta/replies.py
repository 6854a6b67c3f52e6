"""Auto-replies between the SMS process and the MTA: the outbox and the PDUs of a reply.

The SMS process decides a reply while it handles an MO and `store`s it in `mid.reply_outbox`
in the MO's own transaction (with a NOTIFY on the MTA's queue channel, delivered on
commit): a reply is never lost once its MO is committed. The SMS process opens no
transmitter: MTA children `claim` the replies of their accounts (SKIP LOCKED, under their
lease; a dead child's rows are claimed again by another), send them on their own binds
inside the same window and rate cap as MTs (mta.replies) and `forget` each once the SMSC
answered it. A child that dies between the submit_sm and the delete leaves the reply to be
sent again: at least once, a duplicate only after a crash.

`reply_pdus` builds the submit_sm PDUs of one reply: the account's encoding mapping and
transliteration, split with a concatenation UDH when long, from the short code the MO was
sent to, to its sender, the MO's TON/NPI mirrored, `registered_delivery` 0 (SPEC section 6:
no receipt for auto-replies).
Touches: the database (`mid.reply_outbox`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from smsmta.settings import Account
from smsmta.smpp.constants import EsmClass
from smsmta.smpp.pdu import Pdu, SubmitSm
from smsmta.smpp.text import encode_message

#: the MTA children's queue channel (mta.child listens; payload: the account id)
NOTIFY_CHANNEL = "smsmta_queue"

STORE = """
INSERT INTO mid.reply_outbox (account_id, source_addr, source_ton, source_npi,
                              destination_addr, dest_ton, dest_npi, text)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""

CLAIM = """
UPDATE mid.reply_outbox r SET lease_owner = %(owner)s
FROM (
    SELECT o.id FROM mid.reply_outbox o
    WHERE o.account_id = %(account_id)s
      AND (o.lease_owner IS NULL
           OR NOT EXISTS (SELECT 1 FROM mid.mta_lease l WHERE l.owner = o.lease_owner))
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) c
WHERE r.id = c.id
RETURNING r.id, r.account_id, r.source_addr, r.source_ton, r.source_npi,
          r.destination_addr, r.dest_ton, r.dest_npi, r.text
"""

FORGET = "DELETE FROM mid.reply_outbox WHERE id = ANY(%s)"
HAND_BACK = "UPDATE mid.reply_outbox SET lease_owner = NULL WHERE id = ANY(%s)"


@dataclass(frozen=True)
class Reply:
    """An auto-reply: from the short code the MO was sent to, to the MO's sender."""

    account_id: int
    source_addr: str
    source_ton: int
    source_npi: int
    destination_addr: str
    dest_ton: int
    dest_npi: int
    text: str
    id: int = field(default=0, kw_only=True)  # its outbox row, once stored


def reply_pdus(account: Account, reply: Reply) -> tuple[Pdu, ...]:
    """The submit_sm PDUs of one auto-reply (raises smsmta.smpp.text.TextError)."""
    mapping = tuple((rule.data_coding, rule.encoding) for rule in account.smsc.encoding_mapping)
    encoded = encode_message(
        reply.text, mapping, transliterate=account.channel.transliteration, max_parts=10
    )
    esm_class = EsmClass.UDHI if encoded.udh else 0
    return tuple(
        SubmitSm(
            service_type=account.channel.service_type,
            source_addr_ton=reply.source_ton,
            source_addr_npi=reply.source_npi,
            source_addr=reply.source_addr,
            dest_addr_ton=reply.dest_ton,
            dest_addr_npi=reply.dest_npi,
            destination_addr=reply.destination_addr,
            esm_class=esm_class,
            registered_delivery=0,
            data_coding=encoded.data_coding,
            short_message=part,
        )
        for part in encoded.parts
    )


async def store(conn: psycopg.AsyncConnection, replies: Iterable[Reply]) -> int:
    """Write replies into the outbox, inside the caller's transaction; wake the MTA."""
    rows = [
        (
            r.account_id,
            r.source_addr,
            r.source_ton,
            r.source_npi,
            r.destination_addr,
            r.dest_ton,
            r.dest_npi,
            r.text,
        )
        for r in replies
    ]
    if not rows:
        return 0
    async with conn.cursor() as cursor:
        await cursor.executemany(STORE, rows)
    for account_id in sorted({row[0] for row in rows}):
        await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(account_id)))
    return len(rows)


async def claim(
    conn: psycopg.AsyncConnection, account_id: int, owner: str, limit: int
) -> list[Reply]:
    """Claim up to `limit` replies of the account for this owner (oldest first)."""
    async with conn.transaction():
        cursor = await conn.execute(
            CLAIM, {"owner": owner, "account_id": account_id, "limit": limit}
        )
        rows = await cursor.fetchall()
    return [Reply(*row[1:], id=row[0]) for row in rows]


async def forget(conn: psycopg.AsyncConnection, ids: list[int]) -> None:
    """The SMSC answered these replies (or they cannot be sent): out of the outbox."""
    if ids:
        await conn.execute(FORGET, (ids,))


async def hand_back(conn: psycopg.AsyncConnection, ids: list[int]) -> None:
    """Claimed but not sent (stopping): free for any child at once."""
    if ids:
        await conn.execute(HAND_BACK, (ids,))
