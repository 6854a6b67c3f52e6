"""The retention purge (smsmta.queue.purge) against a real PostgreSQL.

Rows are written as the services write them (statuses changed by UPDATE, so the status
trigger sets status_xid; the status pull's acknowledgement by midsourcing.store.pull), then
aged by moving their timestamps back. Every purge runs with a small batch, so that the
keyset walk and the batch bound are exercised on a few hundred rows.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import URL
from structlog.testing import capture_logs

from midsourcing import store
from smsmta import obs
from smsmta.accounts import sync_accounts
from smsmta.db.engine import libpq_dsn
from smsmta.queue.enqueue import DeliverySpec, create_delivery
from smsmta.queue.purge import purge
from smsmta.settings import MidConfig, SmsProcessService
from tests.sms_process.conftest import connect, sms_config

DAY = 86400.0
FINAL = ("delivered", "failed", "cancelled")
ALL = ("pending", "sending", "sent", *FINAL)

pytestmark = pytest.mark.timeout(60)


def settings(**overrides: float) -> SmsProcessService:
    values = {"purge_batch": 100, "purge_pause": 0, **overrides}
    return MidConfig.model_validate(json.loads(sms_config(2775))).sms_process.model_copy(
        update=values
    )


class Db:
    def __init__(self, conn: psycopg.AsyncConnection, account_id: int) -> None:
        self.conn = conn
        self.account_id = account_id

    async def delivery(self, name: str, synced: bool = False) -> int:
        delivery_id = await create_delivery(self.conn, self.account_id, DeliverySpec(name))
        if synced:  # pushed through the mid API: a marketing side pulls its statuses
            await self.conn.execute(
                "INSERT INTO mid.delivery_sync (delivery_id, pushed_total, push_completed_at) "
                "VALUES (%s, 0, now())",
                (delivery_id,),
            )
            await self.conn.execute(
                "UPDATE mid.delivery SET state = 'running' WHERE id = %s", (delivery_id,)
            )
        return delivery_id

    async def messages(
        self, delivery_id: int, count: int, status: str, age_days: float, first: int = 0
    ) -> list[int]:
        """`count` messages set to `status` by an UPDATE, their final status `age_days` old."""
        cursor = await self.conn.execute(
            "INSERT INTO mid.broad_log (delivery_id, account_id, marketing_message_id, "
            "address, text, created_at) "
            "SELECT %s, %s, n, '+33600000001', 'Hello', now() - make_interval(days => %s::int + 1) "
            "FROM generate_series(%s::int, %s::int) AS n RETURNING id",
            (delivery_id, self.account_id, int(age_days), first, first + count - 1),
        )
        ids = [row[0] for row in await cursor.fetchall()]
        if status != "pending":
            final = status in FINAL
            await self.conn.execute(
                "UPDATE mid.broad_log SET status = %s, failure_type = CASE WHEN %s = 'failed' "
                "THEN 'hard'::mid.failure_type END, "
                "sent_at = now() - make_interval(days => %s::int), "
                "final_at = CASE WHEN %s THEN now() - make_interval(days => %s::int) END "
                "WHERE id = ANY(%s)",
                (status, status, age_days, final, age_days, ids),
            )
        return ids

    async def count(self, table: str, where: str = "true", *args: object) -> int:
        cursor = await self.conn.execute(f"SELECT count(*) FROM mid.{table} WHERE {where}", args)
        return (await cursor.fetchone())[0]


@pytest.fixture
async def db(migrated_db_url: URL):  # type: ignore[no-untyped-def]
    config = MidConfig.model_validate(json.loads(sms_config(2775)))
    conn = await connect(libpq_dsn(migrated_db_url))
    try:
        account_id = (await sync_accounts(conn, config))["ops_sms"]
        yield Db(conn, account_id)
    finally:
        await conn.close()


async def test_provider_ids_and_receipts_go_past_their_retention_not_before(db: Db) -> None:
    await db.conn.execute(
        "INSERT INTO mid.provider_msg_id (account_id, provider_id, broad_log_id, delivery_id, "
        "created_at) SELECT %s, n::text, n, 1, now() - make_interval(days => CASE "
        "WHEN n <= 230 THEN 8 ELSE 6 END) FROM generate_series(1, 250) AS n",
        (db.account_id,),
    )
    # receipt history: 31 days old (70 matched + 30 unmatched/invalid), 29 days old (40)
    await db.conn.execute(
        "INSERT INTO mid.receipt (account_id, provider_id, outcome, result, text, "
        "received_at, processed_at) SELECT %s, n::text, 'delivered', CASE WHEN n <= 20 "
        "THEN 'unmatched' WHEN n <= 30 THEN 'invalid' ELSE 'applied' END::mid.receipt_result, "
        "'id:x', now(), now() - make_interval(days => CASE WHEN n <= 100 THEN 31 ELSE 29 END) "
        "FROM generate_series(1, 140) AS n",
        (db.account_id,),
    )
    before = obs.SP_PURGED.labels("receipt")._value.get()
    with capture_logs() as logs:
        counts = await purge(db.conn, settings())
    assert counts["provider_msg_id"] == 230
    assert await db.count("provider_msg_id") == 20
    assert counts["receipt"] == 100 and counts["receipt_unmatched"] == 30
    assert await db.count("receipt") == 40
    assert obs.SP_PURGED.labels("receipt")._value.get() - before == 100
    unmatched = [e for e in logs if e["event"] == "sms_process.purged_unmatched_receipts"]
    assert unmatched and unmatched[0]["rows"] == 30
    assert (await purge(db.conn, settings()))["provider_msg_id"] == 0  # nothing left to do


async def test_only_final_messages_past_their_retention_are_purged(db: Db) -> None:
    delivery = await db.delivery("direct")  # no marketing side: nothing to wait for
    old = {s: await db.messages(delivery, 60, s, 91, first=1000 * i) for i, s in enumerate(ALL)}
    young = await db.messages(delivery, 50, "delivered", 89, first=10_000)
    counts = await purge(db.conn, settings())
    assert counts["broad_log"] == 3 * 60 and counts["broad_log_unpulled"] == 0
    for status in FINAL:
        assert await db.count("broad_log", "id = ANY(%s)", old[status]) == 0
    for status in ("pending", "sending", "sent"):  # never final: never purged, however old
        assert await db.count("broad_log", "id = ANY(%s)", old[status]) == 60
    assert await db.count("broad_log", "id = ANY(%s)", young) == 50
    # the delivery and its KPI row stay
    assert await db.count("delivery", "id = %s", delivery) == 1


async def test_a_status_the_marketing_side_has_not_pulled_is_never_purged(db: Db) -> None:
    # first in final_at order: a synced delivery whose statuses were not pulled at all, so
    # the keyset walk has to go past 150 kept rows (two batches) to reach the others
    unpulled = await db.delivery("never-pulled", synced=True)
    kept = await db.messages(unpulled, 150, "delivered", 95)
    synced = await db.delivery("pulled-in-part", synced=True)
    page_one = await db.messages(synced, 120, "failed", 92)
    page_two = await db.messages(synced, 80, "delivered", 92, first=1000)

    row = await store.get_delivery(db.conn, synced, "ops")
    assert row is not None
    first = await store.pull(db.conn, row, "", 120)  # the marketing side gets page one ...
    assert [c.id for c in first.changes] == list(range(120)) and first.more
    counts = await purge(db.conn, settings())
    assert counts["broad_log"] == 0  # ... but has not acknowledged it yet
    assert counts["broad_log_unpulled"] == 350

    second = await store.pull(db.conn, row, first.cursor, 1000)  # acknowledges page one
    assert len(second.changes) == 80 and not second.more
    counts = await purge(db.conn, settings())
    assert counts["broad_log"] == 120 and counts["broad_log_unpulled"] == 230
    assert await db.count("broad_log", "id = ANY(%s)", page_one) == 0
    assert await db.count("broad_log", "id = ANY(%s)", page_two) == 80
    assert await db.count("broad_log", "id = ANY(%s)", kept) == 150

    await store.pull(db.conn, row, second.cursor, 1000)  # acknowledges page two
    assert (await purge(db.conn, settings()))["broad_log"] == 80
    assert await db.count("broad_log", "delivery_id = %s", synced) == 0
    assert await db.count("delivery_sync", "delivery_id = %s", synced) == 1


async def test_every_statement_deletes_at_most_one_batch(db: Db) -> None:
    delivery = await db.delivery("batches")
    await db.messages(delivery, 250, "delivered", 100)
    await db.conn.execute(
        "INSERT INTO mid.provider_msg_id (account_id, provider_id, broad_log_id, delivery_id, "
        "created_at) SELECT %s, n::text, n, 1, now() - interval '8 days' "
        "FROM generate_series(1, 250) AS n",
        (db.account_id,),
    )
    seen: list[tuple[str, int, float]] = []
    counts = await purge(db.conn, settings(), observe=lambda *batch: seen.append(batch))
    assert counts["broad_log"] == counts["provider_msg_id"] == 250
    for table in ("provider_msg_id", "broad_log"):
        assert [n for t, n, _ in seen if t == table] == [100, 100, 50]
    assert all(seconds >= 0 for _, _, seconds in seen)


async def test_stuck_inbox_rows_are_purged_counted_and_logged(db: Db) -> None:
    async def inbox(kind: str, age_days: float, attempts: int, held: bool, n: int) -> None:
        await db.conn.execute(
            "INSERT INTO mid.inbox (account_id, kind, pdu, received_at, attempts, held) "
            "SELECT %s, %s, '\\x00', now() - make_interval(days => %s::int), %s, %s "
            "FROM generate_series(1, %s::int)",
            (db.account_id, kind, age_days, attempts, held, n),
        )

    await inbox("receipt", 9, 3, False, 130)  # tried, never matched, stuck: purged
    await inbox("mo", 8, 0, True, 40)  # a long MO's part held for a week: purged
    await inbox("receipt", 8, 0, False, 25)  # never tried (process down): left to work
    await inbox("receipt", 1, 2, False, 30)  # waiting within the retention: kept
    before = obs.SP_PURGED.labels("inbox")._value.get()
    with capture_logs() as logs:
        counts = await purge(db.conn, settings())
    assert counts["inbox"] == 170
    assert obs.SP_PURGED.labels("inbox")._value.get() - before == 170
    assert await db.count("inbox", "attempts = 0 AND NOT held") == 25
    assert await db.count("inbox", "received_at > now() - interval '2 days'") == 30
    purged = {
        (e["kind"], e["held"]): e["rows"] for e in logs if e["event"] == "sms_process.purged_inbox"
    }
    assert purged == {("receipt", False): 130, ("mo", True): 40}
    assert all(e["log_level"] == "warning" for e in logs if e["event"].endswith("_inbox"))


def test_retentions_are_checked_with_a_clear_error() -> None:
    with pytest.raises(ValidationError, match=r"broad_log_retention .* provider_msg_id_retention"):
        SmsProcessService(broad_log_retention=DAY, provider_msg_id_retention=7 * DAY)
    with pytest.raises(ValidationError, match=r"inbox_retention .* receipt_match_wait"):
        SmsProcessService(inbox_retention=60, receipt_match_wait=600)
    with pytest.raises(ValidationError, match="purge_pause"):
        SmsProcessService(purge_pause=-1)
    defaults = SmsProcessService()
    assert defaults.broad_log_retention == 90 * DAY and defaults.inbox_retention == 7 * DAY
