"""A STOP and a later MT to the same handset meet whatever each number's written form
(issue 13 item 1), and the blacklist is scoped by the short code a message is sent from.

At the SQL level: STOP MOs go through sms_process.mo.MoHandler into a real database, then
mta.queue.claim takes MTs written another way and must say `blacklisted`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from sqlalchemy import URL

from mta.queue import claim
from sms_process.mo import MoHandler
from smsmta.accounts import sync_accounts
from smsmta.db.engine import libpq_dsn
from smsmta.queue.enqueue import DeliverySpec, create_delivery, enqueue
from smsmta.settings import MidConfig
from smsmta.smpp import codec
from smsmta.smpp.pdu import DeliverSm

SHORT_CODE = "38000"


def config(default_country: str = "") -> MidConfig:
    return MidConfig.model_validate(
        {
            "kind": "mid",
            "accounts": [
                {
                    "name": "ops_sms",
                    "operator": "ops",
                    "default_country": default_country,
                    "connection": {"server": "127.0.0.1", "port": 1, "system_id": "smsmta"},
                    "channel": {"short_code": SHORT_CODE},
                    "auto_replies": [
                        {"keyword": "STOP", "action": "blacklist"},
                        {"keyword": "START", "action": "unblacklist"},
                    ],
                }
            ],
        }
    )


def mo(source: str, ton: int, text: str = "STOP", short_code: str = SHORT_CODE) -> bytes:
    return codec.encode(
        DeliverSm(
            source_addr_ton=ton,
            source_addr_npi=1,
            source_addr=source,
            destination_addr=short_code,
            short_message=text.encode(),
        ).with_sequence_number(1)
    )


async def stops(
    conn: psycopg.AsyncConnection, cfg: MidConfig, account_id: int, mos: list[bytes]
) -> None:
    handler = MoHandler({account_id: cfg.accounts[0]}, {account_id: "ops_sms"})
    now = datetime.now(UTC)
    async with conn.transaction():
        await handler.handle(conn, [(i, account_id, raw, now) for i, raw in enumerate(mos)])


async def claimed(
    conn: psycopg.AsyncConnection,
    cfg: MidConfig,
    account_id: int,
    addresses: list[str],
    source_addr: str | None,
    name: str,
) -> dict[str, bool]:
    delivery = await create_delivery(
        conn, account_id, DeliverySpec(marketing_delivery_id=name, source_addr=source_addr)
    )
    await enqueue(conn, delivery, account_id, [(i, a, "hi") for i, a in enumerate(addresses)])
    channel = cfg.accounts[0].channel
    mts = await claim(
        conn,
        account_id,
        "test",
        100,
        default_source=channel.source_number or channel.short_code,
        short_code=channel.short_code,
        default_country=cfg.accounts[0].default_country,
    )
    await conn.execute(
        "UPDATE mid.broad_log SET status = 'sent' WHERE delivery_id = %s", (delivery,)
    )
    return {mt.address: mt.blacklisted for mt in mts}


async def test_a_stop_meets_the_mt_whatever_the_written_form(migrated_db_url: URL) -> None:
    cfg = config()
    async with await psycopg.AsyncConnection.connect(
        libpq_dsn(migrated_db_url), autocommit=True
    ) as conn:
        account_id = (await sync_accounts(conn, cfg))["ops_sms"]
        # seen: STOP with TON 1 from 33600000001, STOP with TON 0 from 33600000021
        await stops(conn, cfg, account_id, [mo("33600000001", 1), mo("33600000021", 0)])
        cursor = await conn.execute(
            "SELECT short_code, address FROM mid.short_code_blacklist ORDER BY address"
        )
        assert await cursor.fetchall() == [
            (SHORT_CODE, "+33600000001"),
            (SHORT_CODE, "+33600000021"),
        ]
        result = await claimed(
            conn, cfg, account_id, ["33600000001", "+33600000021", "+33600000099"], None, "d1"
        )
        assert result == {"33600000001": True, "+33600000021": True, "+33600000099": False}


async def test_national_mo_sender_with_the_default_country(migrated_db_url: URL) -> None:
    cfg = config("FR")
    async with await psycopg.AsyncConnection.connect(
        libpq_dsn(migrated_db_url), autocommit=True
    ) as conn:
        account_id = (await sync_accounts(conn, cfg))["ops_sms"]
        await stops(conn, cfg, account_id, [mo("0612345678", 2), mo("0033612345679", 0)])
        result = await claimed(
            conn, cfg, account_id, ["+33612345678", "0612345679", "+33612345670"], None, "d2"
        )
        assert result == {"+33612345678": True, "0612345679": True, "+33612345670": False}
        # START lifts it, whatever the form again
        await stops(conn, cfg, account_id, [mo("33612345678", 1, "start")])
        result = await claimed(conn, cfg, account_id, ["0612345678"], None, "d3")
        assert result == {"0612345678": False}


async def test_blacklist_scope_is_the_short_code_the_mt_is_sent_from(
    migrated_db_url: URL,
) -> None:
    cfg = config()
    async with await psycopg.AsyncConnection.connect(
        libpq_dsn(migrated_db_url), autocommit=True
    ) as conn:
        account_id = (await sync_accounts(conn, cfg))["ops_sms"]
        # STOP to the account's main short code, and to a long number used as a From
        await stops(
            conn,
            cfg,
            account_id,
            [mo("33600000001", 1), mo("33600000002", 1, short_code="33700000000")],
        )
        numbers = ["+33600000001", "+33600000002"]
        # no From: the account's short code
        assert await claimed(conn, cfg, account_id, numbers, None, "s1") == {
            "+33600000001": True,
            "+33600000002": False,
        }
        # another numeric From: the main short code's STOP does not apply
        assert await claimed(conn, cfg, account_id, numbers, "38001", "s2") == {
            "+33600000001": False,
            "+33600000002": False,
        }
        # the long number From, written with spaces: the STOP sent to it applies
        assert await claimed(conn, cfg, account_id, numbers, "+33 7 00 00 00 00", "s3") == {
            "+33600000001": False,
            "+33600000002": True,
        }
        # an alphanumeric From cannot be answered: the account's short code's list applies
        assert await claimed(conn, cfg, account_id, numbers, "MyBrand", "s4") == {
            "+33600000001": True,
            "+33600000002": False,
        }
