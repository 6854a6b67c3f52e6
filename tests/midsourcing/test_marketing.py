"""The marketing service against a real mid API: create from CSV, push, retry, pull, KPIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midsourcing.client import MidClient, MidError
from midsourcing.marketing import cancel_local, create_delivery, delivery_status
from midsourcing.marketing_service import Service
from midsourcing.schemas import Message
from smsmta.settings import MarketingConfig
from tests.midsourcing.conftest import OPS_PASSWORD, MidServer, free_port


def marketing_config(url: str, password: str = OPS_PASSWORD, **service: Any) -> MarketingConfig:
    return MarketingConfig.model_validate(
        {
            "kind": "marketing",
            "marketing": {
                "metrics_port": None,
                "push_chunk_size": 40,
                "retry_initial": 5,
                "retry_max": 60,
                **service,
            },
            "accounts": [{"name": "sms", "mid_url": url, "operator": "ops", "password": password}],
            "templates": [
                {"name": "promo", "account": "sms", "max_parts": 2, "validity": 3600},
            ],
        }
    )


@pytest.fixture
async def conn(mid_server: MidServer) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(mid_server.dsn, autocommit=True) as c:
        yield c


def write_csv(path: Path, count: int, start: int = 0) -> Path:
    rows = [f"+3370{start + i:07d},Name{i}" for i in range(count)]
    path.write_text("mobile,first_name\n" + "\n".join(rows) + "\nbad,Nobody\n")
    return path


async def scalar(conn: psycopg.AsyncConnection, sql: str, *params: Any) -> Any:
    cursor = await conn.execute(sql, params or None)
    row = await cursor.fetchone()
    return row[0] if row else None


async def test_mid_down_then_up_nothing_lost_nothing_doubled(
    mid_server: MidServer, conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    down = marketing_config(f"http://127.0.0.1:{free_port()}")
    created = await create_delivery(
        conn, down, "promo", write_csv(tmp_path / "r.csv", 100), "Hi {first_name}"
    )
    assert [str(r) for r in created.recipients.rejected] == [
        "row 102: invalid mobile number 'bad': a phone number has only digits, after an "
        "optional '+'"
    ]
    delivery = created.delivery_id
    service = Service(down, mid_server.dsn)
    assert await service.push_once(conn) == 0
    status = await delivery_status(conn, delivery)
    assert status["state"] == "pushing" and status["mid_delivery_id"] is None
    assert "cannot reach the mid server" in status["push_error"]
    assert await scalar(
        conn, "SELECT next_push_at > now() FROM marketing.delivery WHERE id = %s", delivery
    )
    assert await service.push_once(conn) == 0  # backing off: not tried again yet
    await service.aclose()

    # the mid server is back; a chunk it committed but whose answer was lost is re-pushed
    up = marketing_config(mid_server.url)
    service = Service(up, mid_server.dsn)
    await conn.execute(
        "UPDATE marketing.delivery SET next_push_at = NULL WHERE id = %s", (delivery,)
    )
    client = service.client("sms")
    from midsourcing.marketing import template_options
    from midsourcing.schemas import DeliveryCreate

    info = await client.create_delivery(
        DeliveryCreate(
            marketing_account="sms",
            marketing_delivery_id=str(delivery),
            options=template_options(up.template("promo"), None),
        )
    )
    cursor = await conn.execute(
        "SELECT id, address, text FROM marketing.delivery_message WHERE delivery_id = %s "
        "ORDER BY id LIMIT 40",
        (delivery,),
    )
    lost = [Message(id=i, to=a, text=t) for i, a, t in await cursor.fetchall()]
    await client.push(info.id, lost)

    assert await service.push_once(conn) == 3  # 40 + 40 + 20
    status = await delivery_status(conn, delivery)
    assert status["state"] == "pushed" and status["mid_delivery_id"] == info.id
    assert status["push_error"] is None
    queued = mid_server.query(
        "SELECT count(*), count(DISTINCT marketing_message_id), min(text) FROM mid.broad_log "
        "WHERE delivery_id = %s",
        info.id,
    )
    assert queued == [(100, 100, "Hi Name0")]
    validity = await scalar(
        conn, "SELECT validity_end - created_at FROM marketing.delivery WHERE id = %s", delivery
    )
    assert 3600 <= validity.total_seconds() < 3700  # the template's, fixed at the first push

    # statuses come back page by page into the KPIs
    mid_server.query("UPDATE mid.broad_log SET status = 'sent' WHERE delivery_id = %s", info.id)
    mid_server.query(
        "UPDATE mid.broad_log SET status = 'delivered' WHERE delivery_id = %s "
        "AND marketing_message_id %% 10 <> 0",
        info.id,
    )
    mid_server.query(
        "UPDATE mid.broad_log SET status = 'failed', failure_type = CASE WHEN "
        "marketing_message_id %% 20 = 0 THEN 'soft' ELSE 'hard' END::mid.failure_type, "
        "failure_reason = CASE WHEN marketing_message_id %% 20 = 0 THEN 'SR Sim EXPIRED 003' "
        "ELSE 'SR Sim UNDELIV 001' END WHERE delivery_id = %s AND marketing_message_id %% 10 = 0",
        info.id,
    )
    service = Service(marketing_config(mid_server.url, pull_page_size=30), mid_server.dsn)
    assert await service.pull_once(conn) == 100
    status = await delivery_status(conn, delivery)
    failed = status["failed_hard"] + status["failed_soft"]
    assert (status["delivered"], failed, status["to_send"], status["sent"]) == (90, 10, 0, 0)
    assert status["state"] == "done"
    assert {(e["error"], e["failure_type"]): e["count"] for e in status["errors"]} == {
        ("SR Sim EXPIRED 003", "soft"): status["failed_soft"],
        ("SR Sim UNDELIV 001", "hard"): status["failed_hard"],
    }
    assert await service.pull_once(conn) == 0  # done: no more pulls
    await service.aclose()


async def test_refusal_is_kept_and_backed_off_at_the_longest_delay(
    mid_server: MidServer, conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    config = marketing_config(mid_server.url, password="wrong password")
    created = await create_delivery(
        conn, config, "promo", write_csv(tmp_path / "r.csv", 3, start=500), "Hello"
    )
    service = Service(config, mid_server.dsn)
    await service.push_once(conn)
    await service.aclose()
    status = await delivery_status(conn, created.delivery_id)
    assert "401" in status["push_error"] and "check the login and password" in status["push_error"]
    delay = await scalar(
        conn,
        "SELECT extract(epoch FROM next_push_at - now()) FROM marketing.delivery WHERE id = %s",
        created.delivery_id,
    )
    assert 50 < float(delay) <= 60
    mid_server.query("DELETE FROM mid.login_failure")


async def test_cancel_before_and_during_the_push(
    mid_server: MidServer, conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    config = marketing_config(mid_server.url)
    created = await create_delivery(
        conn, config, "promo", write_csv(tmp_path / "r.csv", 50, start=900), "Hello"
    )
    delivery = created.delivery_id
    service = Service(config, mid_server.dsn)
    await service.push_once(conn)
    info_id = await scalar(
        conn, "SELECT mid_delivery_id FROM marketing.delivery WHERE id = %s", delivery
    )
    await cancel_local(conn, delivery)
    result = await service.client("sms").action(info_id, "cancel")
    assert result.state.value == "cancelled" and result.counters.cancelled == 50
    await service.pull_once(conn)
    status = await delivery_status(conn, delivery)
    assert (status["state"], status["cancelled"], status["to_send"]) == ("cancelled", 50, 0)
    with pytest.raises(MidError) as refused:
        await service.client("sms").action(info_id, "resume")
    assert refused.value.status == 409 and not refused.value.retryable
    await service.aclose()


async def test_client_logs_in_again_when_its_token_is_revoked(mid_server: MidServer) -> None:
    config = marketing_config(mid_server.url)
    async with MidClient(config.account("sms")) as client:
        first = await client.test_connection()
        mid_server.query("DELETE FROM mid.operator_token")
        second = await client.test_connection()
    assert first.operator.login == second.operator.login == "ops"
