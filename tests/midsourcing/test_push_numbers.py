"""Numbers at the push: stored canonical, a bad one refused alone (422 naming it), the rest
queued; the marketing side marks the refused as failed and completes without re-pushing;
From at most 20 characters up front."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from midsourcing.marketing import REFUSED, create_delivery, delivery_status
from midsourcing.marketing_service import Service
from tests.midsourcing.conftest import MidServer
from tests.midsourcing.test_api import new_delivery
from tests.midsourcing.test_marketing import marketing_config


def test_a_bad_number_is_refused_alone_and_the_rest_is_queued(mid_server: MidServer) -> None:
    chunk = [
        {"id": 1, "to": "33612345601", "text": "a"},  # digits only: +33...
        {"id": 2, "to": "0612345602", "text": "b"},  # national: this account has no country
        {"id": 3, "to": "+33 6 12 34 56 03", "text": "c"},
        {"id": 4, "to": "not a number", "text": "d"},
        {"id": 5, "to": "0033612345605", "text": "e"},
    ]
    with mid_server.client() as client:
        delivery = new_delivery(client)["id"]
        url = f"/api/v1/deliveries/{delivery}/messages"
        answers = [client.post(url, json={"messages": chunk}) for _ in range(2)]
        complete = client.post(f"/api/v1/deliveries/{delivery}/complete", json={"total": 3})
    first, again = answers
    assert first.status_code == 422, first.text
    body = first.json()
    assert body["error"] == "rejected_numbers"
    assert [(e["where"], e["recipient_index"], e["message_id"]) for e in body["errors"]] == [
        ("body.messages[1].to", 1, 2),
        ("body.messages[3].to", 3, 4),
    ]
    assert "default_country" in body["errors"][0]["message"]
    assert "'not a number'" in body["errors"][1]["message"]
    assert body["chunk"] == {"received": 3, "inserted": 3, "duplicates": 0, "total": 3}
    # pushed again (a lost answer): the same refusal, nothing queued twice
    assert again.status_code == 422
    assert again.json()["chunk"] == {"received": 3, "inserted": 0, "duplicates": 3, "total": 3}
    assert mid_server.query(
        "SELECT marketing_message_id, address FROM mid.broad_log WHERE delivery_id = %s ORDER BY 1",
        delivery,
    ) == [(1, "+33612345601"), (3, "+33612345603"), (5, "+33612345605")]
    assert complete.status_code == 200, complete.text


@pytest.mark.parametrize("length", [20, 21])
def test_from_over_20_characters_is_refused_up_front(mid_server: MidServer, length: int) -> None:
    source = "3" * length
    with mid_server.client() as client:
        preview = client.post(
            "/api/v1/preview",
            json={"marketing_account": "sms", "options": {"source_addr": source}, "texts": ["x"]},
        )
        created = client.post(
            "/api/v1/deliveries",
            json={
                "marketing_account": "sms",
                "marketing_delivery_id": f"from-{length}",
                "options": {"source_addr": source},
            },
        )
    if length == 20:
        assert preview.status_code == 200, preview.text
        assert preview.json()["sender"] == source
        assert created.status_code == 201, created.text
    else:
        assert preview.status_code == 422
        assert "body.options.source_addr" in preview.json()["message"]
        assert "20 characters" in preview.json()["message"]
        assert created.status_code == 422


def test_template_from_over_20_characters_is_refused_at_load() -> None:
    marketing_config("http://127.0.0.1:1")  # the base is valid
    document = marketing_config("http://127.0.0.1:1").model_dump(mode="json")
    document["templates"][0]["source_addr"] = "A" * 21
    from pydantic import ValidationError

    from smsmta.settings import MarketingConfig

    with pytest.raises(ValidationError, match="at most 20 characters"):
        MarketingConfig.model_validate(document)


@pytest.fixture
async def conn(mid_server: MidServer) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(mid_server.dsn, autocommit=True) as c:
        yield c


async def test_marketing_marks_refused_rows_failed_and_completes(
    mid_server: MidServer, conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("mobile,first_name\n" + "".join(f"+3371{i:07d},N{i}\n" for i in range(50)))
    config = marketing_config(mid_server.url)
    created = await create_delivery(conn, config, "promo", csv, "Hi {first_name}")
    delivery = created.delivery_id
    # two rows the mid server cannot canonicalise (written before numbers were canonical)
    await conn.execute(
        "UPDATE marketing.delivery_message SET address = CASE WHEN id %% 2 = 0 THEN '0612' "
        "ELSE '06 12 34 56 78' END WHERE id IN (SELECT id FROM marketing.delivery_message "
        "WHERE delivery_id = %s ORDER BY id OFFSET 5 LIMIT 2)",
        (delivery,),
    )
    service = Service(config, mid_server.dsn)
    try:
        assert await service.push_once(conn) == 2  # 40 + 10, the first with two refused
        assert await service.push_once(conn) == 0  # nothing pushed twice
    finally:
        await service.aclose()
    status = await delivery_status(conn, delivery)
    assert status["state"] == "pushed", status["push_error"]
    cursor = await conn.execute(
        "SELECT status::text, failure_reason FROM marketing.delivery_message "
        "WHERE delivery_id = %s AND status <> 'to_send' ORDER BY id",
        (delivery,),
    )
    refused = await cursor.fetchall()
    assert [s for s, _ in refused] == ["failed_hard", "failed_hard"]
    assert all(reason.startswith(REFUSED) for _, reason in refused)
    assert "default_country" in refused[0][1] + refused[1][1]
    queued = mid_server.query(
        "SELECT count(*), count(DISTINCT marketing_message_id) FROM mid.broad_log "
        "WHERE delivery_id = %s",
        status["mid_delivery_id"],
    )
    assert queued == [(48, 48)]
