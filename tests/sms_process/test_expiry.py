"""The end of the wait for receipts (smsmta.queue.expiry) against a real PostgreSQL.

A message still `sent` past its delivery's validity plus receipt_match_wait used to stay
`sent` for ever (never final, never purged): it now becomes `no_receipt`, final, counted in
the delivery's KPIs, and the purge takes it like any final message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smsmta.queue.enqueue import DeliverySpec, create_delivery
from smsmta.queue.expiry import close_receipts
from smsmta.queue.purge import purge
from tests.sms_process.test_purge import DAY, Db, db, settings

__all__ = ["db"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(60)
HOUR = 3600.0


async def delivery(db: Db, name: str, validity_end: datetime | None) -> int:
    return await create_delivery(
        db.conn, db.account_id, DeliverySpec(name, validity_end=validity_end)
    )


async def kpis(db: Db, delivery_id: int) -> tuple[int, bool]:
    cursor = await db.conn.execute(
        "SELECT no_receipt, receipts_closed_at IS NOT NULL FROM mid.delivery WHERE id = %s",
        (delivery_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row[0], row[1]


async def test_sent_messages_past_validity_and_wait_end_as_no_receipt(db: Db) -> None:
    now = datetime.now(UTC)
    over = await delivery(db, "over", now - timedelta(hours=2))
    waiting = await delivery(db, "waiting", now - timedelta(minutes=30))  # wait: 1 h
    current = await delivery(db, "current", now + timedelta(hours=1))
    stuck = await db.messages(over, 25, "sent", 0)
    await db.messages(over, 5, "delivered", 0, first=100)
    await db.messages(over, 3, "failed", 0, first=200)
    await db.messages(waiting, 4, "sent", 0)
    await db.messages(current, 4, "sent", 0)

    closed = await close_receipts(db.conn, default_validity=48 * HOUR, wait=HOUR, batch=10)

    assert [(c.delivery_id, c.no_receipt) for c in closed] == [(over, 25)]
    assert await db.count("broad_log", "status = 'no_receipt'") == 25
    assert (
        await db.count(
            "broad_log", "id = ANY(%s) AND status = 'no_receipt' AND final_at IS NOT NULL", stuck
        )
        == 25
    )
    assert await db.count("broad_log", "status = 'delivered'") == 5  # finals untouched
    assert await db.count("broad_log", "status = 'sent'") == 8  # still within their wait
    assert await kpis(db, over) == (25, True)
    assert await kpis(db, waiting) == (0, False)
    # a closed delivery is not scanned again
    assert await close_receipts(db.conn, default_validity=48 * HOUR, wait=HOUR) == []


async def test_without_a_validity_period_the_mta_default_applies(db: Db) -> None:
    old = await delivery(db, "old", None)
    await db.conn.execute(
        "UPDATE mid.delivery SET created_at = now() - interval '3 days' WHERE id = %s", (old,)
    )
    young = await delivery(db, "young", None)
    await db.messages(old, 3, "sent", 0)
    await db.messages(young, 3, "sent", 0)
    closed = await close_receipts(db.conn, default_validity=48 * HOUR, wait=HOUR)
    assert [(c.delivery_id, c.no_receipt) for c in closed] == [(old, 3)]


async def test_no_receipt_messages_are_purged_like_final_ones(db: Db) -> None:
    over = await delivery(db, "over", datetime.now(UTC) - timedelta(days=100))
    await db.messages(over, 7, "sent", 95)
    await close_receipts(db.conn, default_validity=48 * HOUR, wait=HOUR)
    await db.conn.execute(
        "UPDATE mid.broad_log SET final_at = now() - interval '95 days' WHERE delivery_id = %s",
        (over,),
    )
    counts = await purge(db.conn, settings(broad_log_retention=90 * DAY))
    assert counts["broad_log"] == 7
    assert await db.count("broad_log", "delivery_id = %s", over) == 0
