"""The inbox: rows committed before their ack, back-to-back batches, refusal after close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
from sqlalchemy import URL

from smsmta.db import InboxKind
from smsmta.db.engine import libpq_dsn
from smsmta.queue.inbox import Inbox, kind_of
from smsmta.smpp import codec
from smsmta.smpp.pdu import DeliverSm


def receipt(n: int) -> DeliverSm:
    return DeliverSm(
        source_addr="33600000001",
        destination_addr="38000",
        esm_class=0x04,
        short_message=f"id:{n} sub:001 dlvrd:001 stat:DELIVRD err:000 Text:x".encode(),
    )


def test_kind_of() -> None:
    assert kind_of(receipt(1)) is InboxKind.RECEIPT
    assert kind_of(DeliverSm(source_addr="1", short_message=b"STOP")) is InboxKind.MO
    tlv_receipt = DeliverSm(source_addr="1", tlvs=((0x001E, "12"), (0x0427, 2)))
    assert kind_of(tlv_receipt) is InboxKind.RECEIPT


async def test_rows_are_committed_before_their_ack(migrated_db_url: URL) -> None:
    dsn = libpq_dsn(migrated_db_url)

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    observer = await connect()
    seen_at_ack: list[int] = []
    acked = asyncio.Event()
    count = 500

    inbox = Inbox(connect)
    runner = asyncio.create_task(inbox.run())

    def ack_of(n: int) -> Callable[[], None]:
        def ack() -> None:
            seen_at_ack.append(n)
            if len(seen_at_ack) == count:
                acked.set()

        return ack

    for n in range(count):
        assert inbox.add(7, receipt(n).with_sequence_number(n + 1), ack_of(n))
    await asyncio.wait_for(acked.wait(), 10)
    assert seen_at_ack == list(range(count))  # in order, once each
    cursor = await observer.execute("SELECT account_id, kind::text, pdu FROM mid.inbox ORDER BY id")
    rows = await cursor.fetchall()
    assert len(rows) == count
    assert {(r[0], r[1]) for r in rows} == {(7, "receipt")}
    assert codec.decode(rows[3][2]).short_message.startswith(b"id:3 ")

    await inbox.close()
    await asyncio.wait_for(runner, 5)
    assert not inbox.add(7, receipt(9), lambda: None)  # refused: the SMSC will resend it
    await observer.close()


async def test_ack_waits_for_the_database(migrated_db_url: URL) -> None:
    """With the table locked, nothing is acknowledged; once free, everything is."""
    dsn = libpq_dsn(migrated_db_url)

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    blocker = await psycopg.AsyncConnection.connect(dsn)
    await blocker.execute("LOCK TABLE mid.inbox IN ACCESS EXCLUSIVE MODE")
    acks: list[int] = []
    inbox = Inbox(connect)
    runner = asyncio.create_task(inbox.run())
    for n in range(10):
        inbox.add(1, receipt(n), lambda n=n: acks.append(n))
    # the flush is waiting on the lock (observed in pg_locks), and nothing was acknowledged
    async with asyncio.timeout(10):
        while True:
            cursor = await blocker.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'mid.inbox'::regclass "
                "AND NOT granted"
            )
            if (await cursor.fetchone())[0]:
                break
            await asyncio.sleep(0.02)
    assert acks == []
    for n in range(10, 20):  # come while the first batch is being written
        inbox.add(1, receipt(n), lambda n=n: acks.append(n))
    await blocker.rollback()
    await inbox.close()
    await asyncio.wait_for(runner, 5)
    assert acks == list(range(20))
    cursor = await blocker.execute("SELECT count(*) FROM mid.inbox")
    assert (await cursor.fetchone())[0] == 20
    await blocker.close()


async def test_decoded_pdus_are_kept_by_row_id_and_bounded(migrated_db_url: URL) -> None:
    """keep_decoded: after the commit, row id -> the PDU as received; no more than asked."""
    dsn = libpq_dsn(migrated_db_url)

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    observer = await connect()
    inbox = Inbox(connect, keep_decoded=30, max_batch=20)
    acks: list[int] = []
    pdus = [receipt(n).with_sequence_number(n + 1) for n in range(50)]
    for n, pdu in enumerate(pdus):
        inbox.add(3, pdu, lambda n=n: acks.append(n))
    assert inbox.decoded == {}  # nothing before its commit
    runner = asyncio.create_task(inbox.run())
    await inbox.close()
    await asyncio.wait_for(runner, 5)
    assert acks == list(range(50))
    assert len(inbox.decoded) == 30  # the bound: the rest is decoded from the table
    cursor = await observer.execute("SELECT id, pdu FROM mid.inbox ORDER BY id")
    rows = await cursor.fetchall()
    assert len(rows) == 50
    for row_id, octets in rows:
        if row_id in inbox.decoded:
            assert inbox.decoded[row_id] == codec.decode(octets)
    assert [inbox.decoded[r[0]] for r in rows[:30]] == pdus[:30]
    await observer.close()
