"""Fixes of the mid store: concurrent pushes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.midsourcing.conftest import MidServer


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
