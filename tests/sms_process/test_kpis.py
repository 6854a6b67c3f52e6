"""The delivery counters (smsmta.queue.kpis): the increments and the recount agree.

A delivery gets a message in every final state, each the way the services get it there
(receipts through the reconciler, with real-time KPIs: delivered, failed hard, failed soft
with its retries exhausted, failed `ignored`; one retried, then cancelled; one that never
gets a receipt, ended by the expiry), so its counters are the increments'. The recount the
KPI sync runs for accounts without real-time KPIs must then find the same figures.
"""

from __future__ import annotations

from sqlalchemy import URL

from smsmta.db import FailureType, MessageStatus
from smsmta.queue import kpis
from smsmta.queue.enqueue import cancel_pending
from smsmta.queue.expiry import close_receipts
from tests.sms_process.test_receipts import handle, receipt_row, reconciler, world

COUNTERS = "SELECT delivered, failed_hard, failed_soft, no_receipt FROM mid.delivery WHERE id = %s"


async def test_the_recount_finds_what_the_increments_counted(migrated_db_url: URL) -> None:
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id)  # max_retries=2
    await w.conn.execute(
        "INSERT INTO mid.broad_log_msg (key, first_text, qualification) VALUES "
        "('SR Sim EXPIRED 003|#MESSAGE#', 'x', 'soft'), "
        "('SR Sim REJECTD 009|#MESSAGE#', 'x', 'ignored')"
    )
    delivered, hard, soft, ignored, retried, silent = [await w.mt([str(n)]) for n in range(6)]
    await w.conn.execute("UPDATE mid.broad_log SET retry_count = 2 WHERE id = %s", (soft,))
    await handle(
        w,
        r,
        receipt_row(w.account_id, "0"),
        receipt_row(w.account_id, "1", "UNDELIV", "001"),
        receipt_row(w.account_id, "2", "EXPIRED", "003"),
        receipt_row(w.account_id, "3", "REJECTD", "009"),
        receipt_row(w.account_id, "4", "EXPIRED", "003"),  # back to the queue...
    )
    assert await cancel_pending(w.conn, w.delivery_id) == 1  # ... and cancelled there
    closed = await close_receipts(w.conn, default_validity=0, wait=0)  # `silent`: no receipt
    assert [c.no_receipt for c in closed if c.delivery_id == w.delivery_id] == [1]
    cursor = await w.conn.execute(
        "SELECT id, status::text, failure_type::text FROM mid.broad_log WHERE delivery_id = %s",
        (w.delivery_id,),
    )
    assert {row[0]: row[1:] for row in await cursor.fetchall()} == {
        delivered: ("delivered", None),
        hard: ("failed", "hard"),
        soft: ("failed", "soft"),
        ignored: ("failed", "ignored"),
        retried: ("cancelled", "soft"),
        silent: ("no_receipt", None),
    }
    cursor = await w.conn.execute(COUNTERS, (w.delivery_id,))
    incremented = await cursor.fetchone()
    assert incremented == (1, 1, 1, 1)  # neither `ignored` nor `cancelled` counts here

    await w.conn.execute(
        "UPDATE mid.delivery SET delivered = 0, failed_hard = 0, failed_soft = 0, "
        "no_receipt = 0 WHERE id = %s",
        (w.delivery_id,),
    )
    async with w.conn.transaction():
        await kpis.recount(w.conn, [w.delivery_id])
    cursor = await w.conn.execute(COUNTERS, (w.delivery_id,))
    assert await cursor.fetchone() == incremented
    await w.conn.close()


def test_each_final_state_feeds_at_most_one_counter() -> None:
    assert kpis.column_of(MessageStatus.DELIVERED) == "delivered"
    assert kpis.column_of(MessageStatus.NO_RECEIPT) == "no_receipt"
    assert kpis.column_of(MessageStatus.FAILED, FailureType.HARD) == "failed_hard"
    assert kpis.column_of(MessageStatus.FAILED, FailureType.SOFT) == "failed_soft"
    assert kpis.column_of(MessageStatus.FAILED, FailureType.IGNORED) is None
    assert kpis.column_of(MessageStatus.CANCELLED) is None
    for status in (MessageStatus.PENDING, MessageStatus.SENDING, MessageStatus.SENT):
        assert kpis.column_of(status) is None  # not final: counted when it ends
    # the receipts' increments name exactly the counters a receipt can reach
    assert [c.column for c in kpis.BY_RECEIPT] == ["delivered", "failed_hard", "failed_soft"]
