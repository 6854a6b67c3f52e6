"""Fixes of the mid store and the marketing pull: concurrent pushes, status pages, last ack."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from midsourcing.marketing import create_delivery, delivery_status
from midsourcing.marketing_service import Service
from midsourcing.store import _CHANGES, parse_cursor
from smsmta.settings import MarketingConfig
from tests.midsourcing.conftest import OPS_PASSWORD, MidServer


def new_delivery(client: httpx.Client) -> dict[str, Any]:
    response = client.post(
        "/api/v1/deliveries",
        json={
            "marketing_account": "sms",
            "marketing_delivery_id": f"fix-{time.monotonic_ns()}",
            "label": "fixes",
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def chunk(start: int, count: int) -> dict[str, Any]:
    return {
        "messages": [
            {"id": i, "to": f"+3362{i:07d}", "text": f"Hello {i}"}
            for i in range(start, start + count)
        ]
    }


def test_concurrent_chunks_of_one_delivery_never_deadlock(mid_server: MidServer) -> None:
    """Chunks of one delivery pushed at once (and pushed twice) all succeed, none doubled.

    push_chunk read the delivery FOR SHARE and enqueue_idempotent then UPDATEd it in the
    same transaction: two such pushes each held the share lock and waited for the other's
    to upgrade it, a deadlock that the API answered 503.
    """
    workers, size = 8, 200
    with mid_server.client() as client:
        delivery = new_delivery(client)
    url = f"/api/v1/deliveries/{delivery['id']}/messages"
    # every chunk twice, so that the same rows are also inserted concurrently
    bodies = [chunk(1 + (k % workers) * size, size) for k in range(2 * workers)]

    def push(body: dict[str, Any]) -> tuple[int, str]:
        with mid_server.client() as client:
            response = client.post(url, json=body)
            return response.status_code, response.text

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(push, bodies))
    assert [status for status, _ in answers] == [200] * len(bodies), answers
    rows = mid_server.query(
        "SELECT count(*), count(DISTINCT marketing_message_id), min(marketing_message_id), "
        "max(marketing_message_id) FROM mid.broad_log WHERE delivery_id = %s",
        delivery["id"],
    )
    assert rows == [(workers * size, workers * size, 1, workers * size)]
    to_send = mid_server.query("SELECT to_send FROM mid.delivery WHERE id = %s", delivery["id"])
    assert to_send == [(workers * size,)]


def test_status_page_reads_only_its_own_rows(mid_server: MidServer) -> None:
    """A page of the status pull stops reading broad_log at its LIMIT, however much of the
    delivery comes after it (it used to join and sort the whole rest of the delivery)."""
    rows, limit = 20_000, 101
    with mid_server.client() as client:
        delivery = new_delivery(client)["id"]
    mid_server.query(
        "INSERT INTO mid.broad_log (delivery_id, account_id, marketing_message_id, address, "
        "text) SELECT d.id, d.account_id, i, '+3363' || lpad(i::text, 7, '0'), 'Hi' "
        "FROM mid.delivery d CROSS JOIN generate_series(1, %s) AS i WHERE d.id = %s",
        rows,
        delivery,
    )
    mid_server.query(  # a status change: the trigger sets status_xid
        "UPDATE mid.broad_log SET status = 'failed', failure_type = 'hard', "
        "failure_reason = 'SR Sim UNDELIV 001' WHERE delivery_id = %s",
        delivery,
    )
    mid_server.query("ANALYZE mid.broad_log")
    params = {"delivery": delivery, "xid": 0, "id": 0, "limit": limit}
    with psycopg.connect(mid_server.dsn, autocommit=True) as conn:
        page = conn.execute(_CHANGES, params).fetchall()
        ((plan,),) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _CHANGES, params)

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    read = [
        n["Actual Rows"] for n in nodes(plan[0]["Plan"]) if n.get("Relation Name") == "broad_log"
    ]
    assert read and max(read) <= limit, plan
    assert len(page) == limit
    assert [r[1] for r in page] == sorted(r[1] for r in page)
    assert {r[5] for r in page} == {"SR Sim UNDELIV 001"}


def marketing_config(url: str, **service: Any) -> MarketingConfig:
    return MarketingConfig.model_validate(
        {
            "kind": "marketing",
            "marketing": {"metrics_port": None, "push_chunk_size": 40, **service},
            "accounts": [
                {"name": "sms", "mid_url": url, "operator": "ops", "password": OPS_PASSWORD}
            ],
            "templates": [{"name": "promo", "account": "sms"}],
        }
    )


@pytest.fixture
async def conn(mid_server: MidServer) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(mid_server.dsn, autocommit=True) as c:
        yield c


async def test_finished_delivery_acknowledges_its_last_page(
    mid_server: MidServer, conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    """The cursor of a finished delivery's last page is sent back before it stops being
    pulled: mid.delivery_sync then covers every message, so the purge may remove them all.
    """
    csv = tmp_path / "r.csv"
    csv.write_text("mobile\n" + "\n".join(f"+3371{i:07d}" for i in range(100)) + "\n")
    config = marketing_config(mid_server.url, pull_page_size=30)
    delivery = (await create_delivery(conn, config, "promo", csv, "Hello")).delivery_id
    service = Service(config, mid_server.dsn)
    try:
        assert await service.push_once(conn) == 3  # 40 + 40 + 20
        mid_id = (await delivery_status(conn, delivery))["mid_delivery_id"]
        mid_server.query(
            "UPDATE mid.broad_log SET status = 'delivered', final_at = now() "
            "WHERE delivery_id = %s",
            mid_id,
        )
        # pages of 30, 30, 30 and a last one of 10 that only a pull from its cursor acks
        assert await service.pull_once(conn) == 100
        status = await delivery_status(conn, delivery)
        assert (status["state"], status["delivered"]) == ("done", 100)
        ((pulled_xid, pulled_id),) = mid_server.query(
            "SELECT pulled_xid, pulled_id FROM mid.delivery_sync WHERE delivery_id = %s", mid_id
        )
        cursor = await conn.execute(
            "SELECT status_cursor FROM marketing.delivery WHERE id = %s", (delivery,)
        )
        ((status_cursor,),) = await cursor.fetchall()
        assert (pulled_xid, pulled_id) == parse_cursor(status_cursor) != (0, 0)
        unpulled = mid_server.query(
            "SELECT count(*) FROM mid.broad_log WHERE delivery_id = %s AND status_xid > 0 "
            "AND (status_xid, id) > (%s, %s)",
            mid_id,
            pulled_xid,
            pulled_id,
        )
        assert unpulled == [(0,)]
        assert await service.pull_once(conn) == 0  # done: not pulled any more
    finally:
        await service.aclose()


async def test_messages_without_a_receipt_reach_the_marketing_side_as_no_receipt(
    mid_server: MidServer, conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    """A message the SMS process ended as no_receipt (smsmta.queue.expiry) is final: pulled
    with its own status, counted in the marketing KPIs, and the delivery ends done."""
    csv = tmp_path / "r.csv"
    csv.write_text("mobile\n" + "\n".join(f"+3372{i:07d}" for i in range(10)) + "\n")
    config = marketing_config(mid_server.url)
    delivery = (await create_delivery(conn, config, "promo", csv, "Hello")).delivery_id
    service = Service(config, mid_server.dsn)
    try:
        assert await service.push_once(conn) == 1
        mid_id = (await delivery_status(conn, delivery))["mid_delivery_id"]
        mid_server.query(
            "UPDATE mid.broad_log SET status = CASE WHEN marketing_message_id %% 2 = 0 "
            "THEN 'delivered' ELSE 'no_receipt' END::mid.message_status, final_at = now() "
            "WHERE delivery_id = %s",
            mid_id,
        )
        assert await service.pull_once(conn) == 10
        status = await delivery_status(conn, delivery)
        assert (status["state"], status["delivered"], status["no_receipt"]) == ("done", 5, 5)
        assert status["processed"] == 10 and status["sent"] == 0
        with mid_server.client() as client:
            counters = client.get(f"/api/v1/deliveries/{mid_id}").json()["counters"]
        assert (counters["no_receipt"], counters["sent"]) == (5, 0)
    finally:
        await service.aclose()
