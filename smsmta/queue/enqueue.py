"""Put a delivery and its messages in the mid queue, at COPY speed, and cancel them.

`create_delivery()` inserts (or finds, by account and marketing delivery id) a
`mid.delivery`; `enqueue()` COPYs its messages into `mid.broad_log` in one transaction
and NOTIFYs the MTA children (channel `smsmta_queue`, payload the account id), so that
they claim at once instead of at their next poll. The mid API uses both for pushes
(`enqueue_idempotent()`: a chunk pushed again is not queued twice); tests and benchmarks
use them to fill the queue. `cancel_pending()` ends a cancelled delivery's messages not
claimed yet. The transitions (smsmta.queue.states): enqueue -> pending, cancel pending ->
cancelled. Touches: the database (`mid.delivery`, `mid.broad_log`) and NOTIFY
smsmta_queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg

NOTIFY_CHANNEL = "smsmta_queue"

CREATE_DELIVERY = """
INSERT INTO mid.delivery (account_id, marketing_delivery_id, label, state, source_addr,
                          max_parts, transmission_mode, validity_end, priority, service_type,
                          service_id)
VALUES (%(account_id)s, %(marketing_delivery_id)s, %(label)s, 'running', %(source_addr)s,
        %(max_parts)s, %(transmission_mode)s, %(validity_end)s, %(priority)s,
        %(service_type)s, %(service_id)s)
ON CONFLICT (account_id, marketing_delivery_id) DO UPDATE SET updated_at = now()
RETURNING id
"""

COPY_MESSAGES = (
    "COPY mid.broad_log (delivery_id, account_id, marketing_message_id, address, text) FROM STDIN"
)


@dataclass(frozen=True)
class SendingOptions:
    """The SPEC section 6 options of a delivery, which each of its messages goes out with.

    A base, declared once: `DeliverySpec` (a delivery to create) and
    mta.submit.DeliveryOptions (a delivery as the MTA caches it) add what names the
    delivery from a base listed after this one (`class X(SendingOptions, Name)`): a
    dataclass takes the fields of its last base first, so the name is the first argument.
    """

    source_addr: str | None = None
    max_parts: int = 5
    transmission_mode: str | None = None
    validity_end: datetime | None = None
    priority: int = 0
    service_type: str | None = None
    service_id: str | None = None


@dataclass(frozen=True)
class _MarketingName:
    marketing_delivery_id: str
    label: str = ""


@dataclass(frozen=True)
class DeliverySpec(SendingOptions, _MarketingName):
    """A delivery to create: its marketing id and label, then its sending options."""


async def create_delivery(
    conn: psycopg.AsyncConnection, account_id: int, spec: DeliverySpec
) -> int:
    async with conn.transaction():
        cursor = await conn.execute(
            CREATE_DELIVERY,
            {
                "account_id": account_id,
                "marketing_delivery_id": spec.marketing_delivery_id,
                "label": spec.label,
                "source_addr": spec.source_addr,
                "max_parts": spec.max_parts,
                "transmission_mode": spec.transmission_mode,
                "validity_end": spec.validity_end,
                "priority": spec.priority,
                "service_type": spec.service_type,
                "service_id": spec.service_id,
            },
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def enqueue(
    conn: psycopg.AsyncConnection,
    delivery_id: int,
    account_id: int,
    messages: Iterable[tuple[int | None, str, str]],
) -> int:
    """COPY (marketing_message_id, address, text) rows into the queue; return the count."""
    count = 0
    async with conn.transaction():
        async with conn.cursor() as cursor, cursor.copy(COPY_MESSAGES) as copy:
            for marketing_message_id, address, text in messages:
                await copy.write_row((delivery_id, account_id, marketing_message_id, address, text))
                count += 1
        await conn.execute(
            "UPDATE mid.delivery SET to_send = to_send + %s, updated_at = now() WHERE id = %s",
            (count, delivery_id),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(account_id)))
    return count


PUSH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS push_chunk (
    marketing_message_id bigint NOT NULL, address text NOT NULL, text text NOT NULL
) ON COMMIT DELETE ROWS
"""
COPY_CHUNK = "COPY push_chunk (marketing_message_id, address, text) FROM STDIN"
INSERT_CHUNK = """
INSERT INTO mid.broad_log (delivery_id, account_id, marketing_message_id, address, text)
SELECT %(delivery_id)s, %(account_id)s, marketing_message_id, address, text
FROM push_chunk ORDER BY marketing_message_id
ON CONFLICT (delivery_id, marketing_message_id) DO NOTHING
"""


async def enqueue_idempotent(
    conn: psycopg.AsyncConnection,
    delivery_id: int,
    account_id: int,
    messages: Iterable[tuple[int, str, str]],
) -> tuple[int, int]:
    """Like `enqueue()`, but a message already queued (same delivery and marketing message
    id) is skipped, so a chunk pushed again after a timeout never duplicates a message.

    Call it inside a transaction of `conn` (the caller checks the delivery's state in the
    same one). The rows go through a temporary table by COPY, then one INSERT ... ON
    CONFLICT DO NOTHING. Returns (received, inserted).
    """
    await conn.execute(PUSH_TABLE)
    received = 0
    async with conn.cursor() as cursor, cursor.copy(COPY_CHUNK) as copy:
        for row in messages:
            await copy.write_row(row)
            received += 1
    cursor = await conn.execute(
        INSERT_CHUNK, {"delivery_id": delivery_id, "account_id": account_id}
    )
    inserted = cursor.rowcount
    await conn.execute("TRUNCATE push_chunk")
    if inserted:
        await conn.execute(
            "UPDATE mid.delivery SET to_send = to_send + %s, updated_at = now() WHERE id = %s",
            (inserted, delivery_id),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(account_id)))
    return received, inserted


CANCEL_PENDING = (
    "UPDATE mid.broad_log SET status = 'cancelled', final_at = now(), "
    "updated_at = now() WHERE delivery_id = %s AND status = 'pending'"
)


async def cancel_pending(conn: psycopg.AsyncConnection, delivery_id: int) -> int:
    """End the delivery's messages not claimed yet as `cancelled` (final); return how many.

    Claimed ones (`sending`) finish their attempt. Call it in the transaction that marks the
    delivery cancelled, so that no claim takes a message in between.
    """
    cursor = await conn.execute(CANCEL_PENDING, (delivery_id,))
    return cursor.rowcount
