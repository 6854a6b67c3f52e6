"""Reconciliation against a real PostgreSQL, batch by batch, without sockets.

MTs are recorded the way the MTA records them (provider_msg_id and broad_log.sent_at
from one transaction); receipts are inbox rows as the Inbox writes them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from itertools import count

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import URL
from structlog.testing import capture_logs

from sms_process.receipts import InboxRow, Reconciler
from smsmta.accounts import sync_accounts
from smsmta.db.engine import libpq_dsn
from smsmta.policy import AccountRules, RetryPolicy
from smsmta.queue.enqueue import DeliverySpec, create_delivery
from smsmta.settings import MidConfig
from smsmta.smpp import codec
from smsmta.smpp.pdu import DeliverSm
from tests.sms_process.conftest import connect, sms_config

_ids = count(1)


def receipt_row(
    account_id: int,
    provider_id: str,
    stat: str = "DELIVRD",
    err: str = "000",
    age: float = 0,
    receipted_message_id: str | None = None,
) -> InboxRow:
    text = f"id:{provider_id} sub:001 dlvrd:001 submit date:2611212300 done date:2611212300 "
    text += f"stat:{stat} err:{err} Text:Hello"
    tlvs = () if receipted_message_id is None else ((0x001E, receipted_message_id),)
    pdu = DeliverSm(
        source_addr="33600000001", esm_class=0x04, short_message=text.encode(), tlvs=tlvs
    )
    received = datetime.now(UTC) - timedelta(seconds=age)
    return InboxRow(next(_ids), account_id, codec.encode(pdu), received, 0)


class World:
    def __init__(self, conn: psycopg.AsyncConnection, account_id: int, delivery_id: int) -> None:
        self.conn = conn
        self.account_id = account_id
        self.delivery_id = delivery_id

    async def mt(self, provider_ids: list[str], status: str = "sent") -> int:
        """A message sent in len(provider_ids) parts, recorded as the MTA does."""
        async with self.conn.transaction():
            cursor = await self.conn.execute(
                "INSERT INTO mid.broad_log (delivery_id, account_id, address, text, status, "
                "parts, sent_at) VALUES (%s, %s, '+33600000001', 'Hello', %s, %s, now()) "
                "RETURNING id",
                (self.delivery_id, self.account_id, status, len(provider_ids)),
            )
            (broad_log_id,) = await cursor.fetchone()
            for part_no, provider_id in enumerate(provider_ids, 1):
                await self.conn.execute(
                    "INSERT INTO mid.provider_msg_id (account_id, provider_id, broad_log_id, "
                    "delivery_id, part_no) VALUES (%s, %s, %s, %s, %s)",
                    (self.account_id, provider_id, broad_log_id, self.delivery_id, part_no),
                )
        return broad_log_id

    async def message(self, broad_log_id: int) -> tuple:
        cursor = await self.conn.execute(
            "SELECT status::text, failure_type::text, failure_reason, retry_count, "
            "next_try_at > now() FROM mid.broad_log WHERE id = %s",
            (broad_log_id,),
        )
        return await cursor.fetchone()

    async def kpis(self) -> tuple[int, int, int]:
        cursor = await self.conn.execute(
            "SELECT delivered, failed_hard, failed_soft FROM mid.delivery WHERE id = %s",
            (self.delivery_id,),
        )
        return await cursor.fetchone()

    async def history(self, broad_log_id: int) -> list[tuple]:
        cursor = await self.conn.execute(
            "SELECT part_no, stat, result::text FROM mid.receipt WHERE broad_log_id = %s "
            "ORDER BY id",
            (broad_log_id,),
        )
        return await cursor.fetchall()


async def world(url: URL, **channel: bool) -> tuple[World, MidConfig]:
    config = MidConfig.model_validate(json.loads(sms_config(2775, channel=channel)))
    conn = await connect(libpq_dsn(url))
    account_id = (await sync_accounts(conn, config))["ops_sms"]
    delivery_id = await create_delivery(conn, account_id, DeliverySpec("d1"))
    return World(conn, account_id, delivery_id), config


def reconciler(config: MidConfig, account_id: int, **options: object) -> Reconciler:
    rules = {account_id: AccountRules.of(account_id, config.accounts[0])}
    policy = RetryPolicy(period=60, max_retries=2)
    return Reconciler(rules, policy, match_wait=60, retry_interval=1, **options)  # type: ignore[arg-type]


async def handle(w: World, r: Reconciler, *rows: InboxRow):
    async with w.conn.transaction():
        for row in rows:  # the rows exist in the inbox, as the Inbox wrote them
            await w.conn.execute(
                "INSERT INTO mid.inbox (id, account_id, kind, pdu, received_at) "
                "VALUES (%s, %s, 'receipt', %s, %s)",
                (row.id, row.account_id, row.pdu, row.received_at),
            )
        return await r.handle(w.conn, list(rows))


async def test_final_stats_set_the_status_and_duplicates_change_nothing(
    migrated_db_url: URL,
) -> None:
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id)
    ok = await w.mt(["100"])
    ko = await w.mt(["101"])
    out = await handle(
        w,
        r,
        receipt_row(w.account_id, "100", "ENROUTE"),
        receipt_row(w.account_id, "100"),
        receipt_row(w.account_id, "101", "UNDELIV", "001"),
        receipt_row(w.account_id, "100"),  # duplicate in the same batch
    )
    assert len(out.applied) == 2
    assert (await w.message(ok))[0] == "delivered"
    status, failure_type, reason, _, _ = await w.message(ko)
    assert (status, failure_type) == ("failed", "hard")  # a new message-log entry is hard
    assert reason.startswith("SR Sim UNDELIV 001|MESSAGE=id:101 ")
    assert await w.history(ok) == [
        (1, "ENROUTE", "intermediate"),
        (1, "DELIVRD", "applied"),
        (1, "DELIVRD", "duplicate"),
    ]
    assert await w.kpis() == (1, 1, 0)
    # a later duplicate changes nothing either
    await handle(w, r, receipt_row(w.account_id, "101", "DELIVRD"))
    assert (await w.message(ko))[0] == "failed"
    assert await w.kpis() == (1, 1, 0)
    cursor = await w.conn.execute("SELECT key, count, qualification::text FROM mid.broad_log_msg")
    assert await cursor.fetchall() == [("SR Sim UNDELIV 001|#MESSAGE#", 1, "hard")]
    cursor = await w.conn.execute("SELECT count(*) FROM mid.inbox")
    assert (await cursor.fetchone())[0] == 0


async def test_soft_failures_go_back_to_the_queue(migrated_db_url: URL) -> None:
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id)
    await w.conn.execute(
        "INSERT INTO mid.broad_log_msg (key, first_text, qualification) "
        "VALUES ('SR Sim EXPIRED 003|#MESSAGE#', 'x', 'soft')"
    )
    message = await w.mt(["200"])
    await handle(w, r, receipt_row(w.account_id, "200", "EXPIRED", "003"))
    status, failure_type, _, retries, later = await w.message(message)
    assert (status, failure_type, retries, later) == ("pending", "soft", 1, True)
    assert await w.kpis() == (0, 0, 0)  # not final: no KPI


async def test_receipt_of_an_earlier_attempt_is_ignored(migrated_db_url: URL) -> None:
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id)
    message = await w.mt(["300"])
    # sent again after a soft failure: a new attempt, a new provider id, a later sent_at
    await w.conn.execute(
        "UPDATE mid.broad_log SET sent_at = now() + interval '1 second' WHERE id = %s", (message,)
    )
    await handle(w, r, receipt_row(w.account_id, "300", "UNDELIV", "001"))
    assert (await w.message(message))[0] == "sent"
    assert await w.history(message) == [(1, "UNDELIV", "ignored")]


async def test_unmatched_receipts_wait_then_are_kept(migrated_db_url: URL) -> None:
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id)
    early = receipt_row(w.account_id, "400")
    out = await handle(w, r, early, receipt_row(w.account_id, "999", age=120))
    assert out.waiting == 1  # "400" waits; "999" is past the match wait
    cursor = await w.conn.execute("SELECT id, attempts FROM mid.inbox")
    assert await cursor.fetchall() == [(early.id, 1)]
    cursor = await w.conn.execute("SELECT provider_id, result::text FROM mid.receipt")
    assert await cursor.fetchall() == [("999", "unmatched")]
    # the MT gets recorded: the next try matches
    message = await w.mt(["400"])
    async with w.conn.transaction():
        out = await r.handle(w.conn, [early])
    assert (await w.message(message))[0] == "delivered"


@pytest.mark.parametrize("mode", ["first_part", "all_parts"])
async def test_multipart(migrated_db_url: URL, mode: str) -> None:
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id, multipart_status=mode)
    message = await w.mt(["501", "502", "503"])
    await handle(w, r, receipt_row(w.account_id, "502"), receipt_row(w.account_id, "501"))
    if mode == "first_part":
        assert (await w.message(message))[0] == "delivered"
        assert await w.history(message) == [(2, "DELIVRD", "ignored"), (1, "DELIVRD", "applied")]
        return
    assert (await w.message(message))[0] == "sent"  # part 3 has no receipt yet
    await handle(w, r, receipt_row(w.account_id, "503"))
    assert (await w.message(message))[0] == "delivered"
    assert [result for _, _, result in await w.history(message)] == ["part", "part", "applied"]
    failing = await w.mt(["601", "602"])
    await handle(
        w, r, receipt_row(w.account_id, "601"), receipt_row(w.account_id, "602", "UNDELIV")
    )
    assert (await w.message(failing))[0] == "failed"


async def test_kpis_without_real_time_wait_for_the_sync(migrated_db_url: URL) -> None:
    w, config = await world(migrated_db_url, realtime_kpi=False)
    r = reconciler(config, w.account_id)
    await w.mt(["700"])
    out = await handle(w, r, receipt_row(w.account_id, "700"))
    assert await w.kpis() == (0, 0, 0)
    assert out.dirty_deliveries == {w.delivery_id}
    from smsmta.queue.kpis import LOCK_DELIVERIES, RECOUNT

    async with w.conn.transaction():
        await w.conn.execute(LOCK_DELIVERIES, ([w.delivery_id],))
        await w.conn.execute(RECOUNT, ([w.delivery_id],))
    assert await w.kpis() == (1, 0, 0)


async def test_purge_deletes_old_provider_ids_in_batches(migrated_db_url: URL) -> None:
    w, config = await world(migrated_db_url)
    await w.mt([str(n) for n in range(250)])
    await w.conn.execute(
        "UPDATE mid.provider_msg_id SET created_at = now() - interval '8 days' "
        "WHERE provider_id::int < 230"
    )
    from smsmta.queue.purge import purge

    settings = config.sms_process.model_copy(update={"purge_batch": 100})
    counts = await purge(w.conn, settings)
    assert counts["provider_msg_id"] == 230
    cursor = await w.conn.execute("SELECT count(*) FROM mid.provider_msg_id")
    assert (await cursor.fetchone())[0] == 20


async def test_concurrent_batches_take_turns_on_a_message(migrated_db_url: URL) -> None:
    """Two work loops' batches with parts of one message (all_parts): the second waits on
    the message's row, then sees the first's part receipt; no deadlock, counted once."""
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id, multipart_status="all_parts")
    message = await w.mt(["701", "702"])
    other = await w.mt(["703"])
    second = World(await connect(libpq_dsn(migrated_db_url)), w.account_id, w.delivery_id)
    first_rows = (receipt_row(w.account_id, "701"), receipt_row(w.account_id, "703"))
    second_row = receipt_row(w.account_id, "702")
    async with w.conn.transaction():  # the first batch, not committed yet
        for row in first_rows:
            await w.conn.execute(
                "INSERT INTO mid.inbox (id, account_id, kind, pdu, received_at) "
                "VALUES (%s, %s, 'receipt', %s, %s)",
                (row.id, row.account_id, row.pdu, row.received_at),
            )
        await r.handle(w.conn, list(first_rows))
        waiting = asyncio.create_task(handle(second, r, second_row))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # blocked on the message's row
    outcome = await asyncio.wait_for(waiting, 10)
    assert [item.result.value for item in outcome.handled] == ["applied"]
    assert (await w.message(message))[0] == "delivered"
    assert (await w.message(other))[0] == "delivered"
    assert [result for _, _, result in await w.history(message)] == ["part", "applied"]
    assert await w.kpis() == (2, 0, 0)
    await second.conn.close()


def disagreements(account: str) -> float:
    value = REGISTRY.get_sample_value("smsmta_receipt_id_disagreements_total", {"account": account})
    return value or 0.0


async def test_hex_submit_ids_and_decimal_text_ids_land_on_their_own_message(
    migrated_db_url: URL,
) -> None:
    # The provider answers submit_sm with hex ids and writes receipts' text ids in decimal;
    # receipted_message_id carries the hex id. Default formats (as_is): the text id "10"
    # is the hex id of message 16. The TLV decides; ids 1..9 read the same both ways.
    w, config = await world(migrated_db_url)
    r = reconciler(config, w.account_id)
    messages = {n: await w.mt([f"{n:X}"]) for n in range(1, 130)}
    stats = {n: "UNDELIV" if n % 3 == 0 else "DELIVRD" for n in messages}
    before = disagreements("ops_sms")
    with capture_logs() as logs:
        for lo, hi in ((1, 65), (65, 130)):  # two batches, one log line for the account
            rows = [
                receipt_row(w.account_id, str(n), stats[n], receipted_message_id=f"{n:X}")
                for n in range(lo, hi)
            ]
            await handle(w, r, *rows)
    for n, broad_log_id in messages.items():
        status = (await w.message(broad_log_id))[0]
        assert status == ("failed" if stats[n] == "UNDELIV" else "delivered"), n
        assert [row[2] for row in await w.history(broad_log_id)] == ["applied"], n
    assert disagreements("ops_sms") - before == 120
    said = [e for e in logs if e["event"] == "sms_process.receipt_id_disagreement"]
    assert len(said) == 1, said
    assert said[0]["account"] == "ops_sms"
    assert said[0]["log_level"] == "warning"
    assert said[0]["fix"] == (
        "mt_ack_id_format: hex_number with sr_id_format: decimal would make the text id agree"
    )
    assert (said[0]["text_id"], said[0]["receipted_message_id"]) == ("10", "A")
    await w.conn.close()
