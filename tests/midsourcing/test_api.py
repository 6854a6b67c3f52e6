"""The mid API over HTTP: authentication, routing, validation, pushes, states and pulls."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg

from tests.midsourcing.conftest import OPS_PASSWORD, VIEWER_PASSWORD, MidServer

_counter = iter(range(1, 1_000_000))


def new_delivery(client: httpx.Client, **options: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/deliveries",
        json={
            "marketing_account": "sms",
            "marketing_delivery_id": f"t{next(_counter)}-{time.monotonic_ns()}",
            "label": "test",
            "options": options,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def messages(count: int, start: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": i, "to": f"+3361{i:07d}", "text": f"Hello number {i}"}
        for i in range(start, start + count)
    ]


def test_wrong_password_gets_401_and_unknown_login_the_same(mid_server: MidServer) -> None:
    with mid_server.client("ops", "wrong") as client:
        wrong = client.get("/api/v1/connection")
    with mid_server.client("nobody", "wrong") as client:
        unknown = client.get("/api/v1/connection")
    with httpx.Client(base_url=mid_server.url) as client:
        missing = client.get("/api/v1/connection")
        bad_token = client.get("/api/v1/connection", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401, wrong.text
    assert unknown.status_code == missing.status_code == 401
    assert bad_token.status_code == 401
    assert wrong.json() == unknown.json()  # nothing tells whether the login exists
    assert wrong.json()["error"] == "unauthorized"
    assert "Basic" in wrong.headers["www-authenticate"]


def test_operator_without_administration_gets_403(mid_server: MidServer) -> None:
    with mid_server.client("viewer", VIEWER_PASSWORD) as client:
        response = client.get("/api/v1/connection")
        push = client.post("/api/v1/deliveries/1/messages", json={"messages": messages(1)})
    assert response.status_code == 403
    assert "ADMINISTRATION" in response.json()["message"]
    assert push.status_code == 403


def test_connection_names_operator_rights_and_routes(mid_server: MidServer) -> None:
    with mid_server.client() as client:
        response = client.get("/api/v1/connection")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["operator"] == {"login": "ops", "label": "Operations", "rights": ["ADMINISTRATION"]}
    assert [a["name"] for a in body["accounts"]] == ["ops_sms"]  # ops_off is disabled


def test_token_obtained_with_the_password_works_alone(mid_server: MidServer) -> None:
    with mid_server.client() as client:
        token = client.post("/api/v1/token").json()["token"]
    with httpx.Client(base_url=mid_server.url) as client:
        ok = client.get("/api/v1/connection", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    stored = mid_server.query("SELECT token_hash FROM mid.operator_token")
    assert all(token not in row[0] for row in stored)  # only its hash is kept


def test_unknown_account_pair_is_refused_naming_the_expected_mid_account(
    mid_server: MidServer,
) -> None:
    with mid_server.client() as client:
        unknown = client.post(
            "/api/v1/deliveries",
            json={"marketing_account": "promo", "marketing_delivery_id": "1"},
        )
        disabled = client.post(
            "/api/v1/deliveries", json={"marketing_account": "off", "marketing_delivery_id": "1"}
        )
        preview = client.post(
            "/api/v1/preview", json={"marketing_account": "promo", "texts": ["hi"]}
        )
    for response, expected in (
        (unknown, "ops_promo"),
        (disabled, "ops_off"),
        (preview, "ops_promo"),
    ):
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "unknown_account"
        assert repr(expected) in body["message"]
        assert body["errors"][0]["expected_account"] == expected


def test_repeated_failures_are_slowed_down_whether_the_login_exists_or_not(
    mid_server: MidServer,
) -> None:
    """Failures slow down one (login, client address): the guessing address waits, even with
    the right password, while the operator's own address keeps working. Addresses are given
    with X-Forwarded-For, trusted from 127.0.0.1 (uvicorn's default), one per guesser so
    that no address runs out of its attempt bucket (login_attempts_burst)."""
    from midsourcing import auth

    auth.add_operator(mid_server.dsn, "victim", "Victim", "right password", ["ADMINISTRATION"])
    guesser = {
        "victim": {"X-Forwarded-For": "192.0.2.1"},
        "ghost": {"X-Forwarded-For": "192.0.2.2"},
    }
    own = {"X-Forwarded-For": "192.0.2.3"}
    answers: dict[str, list[int]] = {}
    for login, headers in guesser.items():
        with mid_server.client(login, "guess") as client:
            answers[login] = [
                client.get("/api/v1/connection", headers=headers).status_code for _ in range(5)
            ]
    assert answers["victim"] == answers["ghost"] == [401, 401, 401, 429, 429]
    with mid_server.client("victim", "right password") as client:
        blocked = client.get("/api/v1/connection", headers=guesser["victim"])
        elsewhere = client.get("/api/v1/connection", headers=own)
    assert blocked.status_code == 429  # the guessing address waits, whatever it sends
    assert int(blocked.headers["retry-after"]) >= 1
    assert elsewhere.status_code == 200  # the operator's own address is not locked out
    mid_server.query("DELETE FROM mid.login_failure WHERE login = 'victim'")
    with mid_server.client("victim", "right password") as client:
        assert client.get("/api/v1/connection", headers=guesser["victim"]).status_code == 200


def test_chunk_pushed_again_never_duplicates_a_message(mid_server: MidServer) -> None:
    with mid_server.client() as client:
        delivery = new_delivery(client)
        url = f"/api/v1/deliveries/{delivery['id']}/messages"
        chunk = {"messages": messages(10_000)}
        started = time.perf_counter()
        first = client.post(url, json=chunk)
        elapsed = time.perf_counter() - started
        again = client.post(url, json=chunk)
        overlapping = client.post(url, json={"messages": messages(10, start=9_995)})
        incomplete = client.post(
            f"/api/v1/deliveries/{delivery['id']}/complete", json={"total": 10_010}
        )
        complete = client.post(
            f"/api/v1/deliveries/{delivery['id']}/complete", json={"total": 10_004}
        )
        late = client.post(url, json={"messages": messages(1, start=20_000)})
    print(f"\npush: 10,000 recipients in one chunk in {elapsed:.2f} s ({10_000 / elapsed:,.0f}/s)")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "received": 10_000,
        "inserted": 10_000,
        "duplicates": 0,
        "total": 10_000,
    }
    assert again.json() == {
        "received": 10_000,
        "inserted": 0,
        "duplicates": 10_000,
        "total": 10_000,
    }
    assert overlapping.json() == {"received": 10, "inserted": 4, "duplicates": 6, "total": 10_004}
    assert incomplete.status_code == 409
    assert "10004 messages queued, not 10010" in incomplete.json()["message"]
    assert complete.status_code == 200
    assert complete.json()["push_complete"] is True
    assert late.status_code == 409
    rows = mid_server.query(
        "SELECT count(*), count(DISTINCT marketing_message_id) FROM mid.broad_log "
        "WHERE delivery_id = %s",
        delivery["id"],
    )
    assert rows == [(10_004, 10_004)]
    to_send = mid_server.query("SELECT to_send FROM mid.delivery WHERE id = %s", delivery["id"])
    assert to_send == [(10_004,)]


def test_create_is_idempotent_on_the_marketing_delivery_id(mid_server: MidServer) -> None:
    body = {"marketing_account": "sms", "marketing_delivery_id": "same-one"}
    with mid_server.client() as client:
        first = client.post("/api/v1/deliveries", json=body)
        second = client.post("/api/v1/deliveries", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_invalid_input_is_refused_saying_what_and_where(mid_server: MidServer) -> None:
    with mid_server.client() as client:
        delivery = new_delivery(client)
        url = f"/api/v1/deliveries/{delivery['id']}/messages"
        batch = messages(5)
        batch[3]["to"] = "+33 6 12"
        bad_number = client.post(url, json={"messages": batch})
        batch = messages(3)
        batch[1]["text"] = ""
        empty_text = client.post(url, json={"messages": batch})
        too_many = client.post(url, json={"messages": messages(10_001)})
        twice = client.post(url, json={"messages": messages(2) + messages(1)})
        options = [
            ({"source_addr": "x" * 22}, "body.options.source_addr"),
            ({"priority": 4}, "body.options.priority"),
            ({"max_parts": 0}, "body.options.max_parts"),
            ({"max_parts": 256}, "body.options.max_parts"),
            ({"transmission_mode": "carrier_pigeon"}, "body.options.transmission_mode"),
            ({"service_type": "TOOLONG"}, "body.options.service_type"),
            ({"validity_end": "2030-01-01T00:00:00"}, "body.options.validity_end"),
        ]
        refused = [
            client.post(
                "/api/v1/deliveries",
                json={"marketing_account": "sms", "marketing_delivery_id": "x", "options": o},
            )
            for o, _where in options
        ]
        bad_cursor = client.get(f"/api/v1/deliveries/{delivery['id']}/statuses?cursor=abc")
        not_json = client.post(url, content=b"{", headers={"Content-Type": "application/json"})
    assert bad_number.status_code == 422
    error = bad_number.json()["errors"][0]
    assert error["where"] == "body.messages[3].to" and error["recipient_index"] == 3
    assert "body.messages[3].to" in bad_number.json()["message"]
    assert empty_text.json()["errors"][0]["where"] == "body.messages[1].text"
    assert too_many.status_code == 422 and "10000" in too_many.json()["message"]
    assert twice.status_code == 422 and "messages[2]" in twice.json()["message"]
    for response, (_options, where) in zip(refused, options, strict=True):
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["where"] == where
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["message"]
    assert not_json.status_code == 422
    count = mid_server.query(
        "SELECT count(*) FROM mid.broad_log WHERE delivery_id = %s", delivery["id"]
    )
    assert count == [(4,)]  # the bad number alone was refused (issue 13): its chunk's rest kept


def test_pause_resume_and_cancel(mid_server: MidServer) -> None:
    with mid_server.client() as client:
        delivery = new_delivery(client)
        base = f"/api/v1/deliveries/{delivery['id']}"
        assert client.post(f"{base}/messages", json={"messages": messages(10)}).status_code == 200
        paused = client.post(f"{base}/pause")
        paused_again = client.post(f"{base}/pause")
        resumed = client.post(f"{base}/resume")
        mid_server.query(
            "UPDATE mid.broad_log SET status = 'sent' WHERE delivery_id = %s "
            "AND marketing_message_id <= 2",
            delivery["id"],
        )
        cancelled = client.post(f"{base}/cancel")
        resume_cancelled = client.post(f"{base}/resume")
        push_cancelled = client.post(f"{base}/messages", json={"messages": messages(1, 100)})
        other = client.post("/api/v1/deliveries/999999999/pause")
    assert paused.json()["state"] == "paused" and paused_again.json()["state"] == "paused"
    assert resumed.json()["state"] == "running"
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["counters"]["cancelled"] == 8
    assert cancelled.json()["counters"]["sent"] == 2
    assert resume_cancelled.status_code == 409
    assert push_cancelled.status_code == 409
    assert other.status_code == 404


def test_status_pull_pages_through_changes_and_never_skips_a_late_commit(
    mid_server: MidServer,
) -> None:
    with mid_server.client() as client:
        delivery = new_delivery(client)
        base = f"/api/v1/deliveries/{delivery['id']}"
        client.post(f"{base}/messages", json={"messages": messages(6)})
        client.post(f"{base}/complete", json={"total": 6})
        first = client.get(f"{base}/statuses").json()
        assert first["changes"] == [] and first["cursor"] == ""
        assert first["counters"]["pending"] == 6

        def set_status(ids: list[int], status: str, extra: str = "") -> None:
            mid_server.query(
                f"UPDATE mid.broad_log SET status = '{status}'{extra} WHERE delivery_id = %s "
                "AND marketing_message_id = ANY(%s)",
                delivery["id"],
                ids,
            )

        set_status([1, 2, 3], "sent")
        set_status([2], "delivered")
        set_status([3], "failed", ", failure_type = 'hard', failure_reason = 'SR Sim UNDELIV 001'")
        seen: dict[int, str] = {}
        cursor = ""
        pages = 0
        while True:
            page = client.get(f"{base}/statuses", params={"cursor": cursor, "limit": 2}).json()
            pages += 1
            seen.update({c["id"]: c["status"] for c in page["changes"]})
            cursor = page["cursor"]
            if not page["more"]:
                break
        assert seen == {1: "sent", 2: "delivered", 3: "failed"}
        assert pages == 2
        assert page["counters"] == {
            "total": 6, "pending": 3, "sending": 0, "sent": 1, "delivered": 1,
            "failed_hard": 1, "failed_soft": 0, "cancelled": 0, "no_receipt": 0,
        }  # fmt: skip

        # a transaction still open when the pull runs: its change comes at a later pull
        with psycopg.connect(mid_server.dsn) as late:
            late.execute(
                "UPDATE mid.broad_log SET status = 'delivered' WHERE delivery_id = %s "
                "AND marketing_message_id = 4",
                (delivery["id"],),
            )
            set_status([5], "sent")
            during = client.get(f"{base}/statuses", params={"cursor": cursor}).json()
            late.commit()
        assert during["changes"] == []  # held back below the open transaction
        after = client.get(f"{base}/statuses", params={"cursor": cursor}).json()
        assert {c["id"]: c["status"] for c in after["changes"]} == {4: "delivered", 5: "sent"}
        set_status([1, 5, 6], "delivered")
        set_status([6], "failed", ", failure_type = 'hard'")
        set_status([6], "cancelled")
        final = client.get(f"{base}/statuses", params={"cursor": after["cursor"]}).json()
        assert {c["id"]: c["status"] for c in final["changes"]} == {
            1: "delivered", 5: "delivered", 6: "cancelled",
        }  # fmt: skip
        assert final["state"] == "done"  # push complete and every message final


def test_preview_reports_encoding_parts_transliteration_and_sender(mid_server: MidServer) -> None:
    long_gsm = "A" * 200
    texts = ["Hello", "Fête à Noël", "Hi 🙂", long_gsm, "[" * 100]
    with mid_server.client() as client:
        response = client.post(
            "/api/v1/preview",
            json={"marketing_account": "sms", "options": {"max_parts": 1}, "texts": texts},
        )
        branded = client.post(
            "/api/v1/preview",
            json={
                "marketing_account": "sms",
                "options": {"source_addr": "MyBrand"},
                "texts": ["x"],
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["sender"], body["sender_origin"]) == ("+33600000000", "source_number")
    assert (branded.json()["sender"], branded.json()["sender_origin"]) == ("MyBrand", "from")
    hello, french, emoji, long, escapes = body["previews"]
    assert (hello["encoding"], hello["data_coding"], hello["parts"]) == ("gsm7", 0, 1)
    assert french["encoding"] == "gsm7" and french["sent_text"] == "Fete à Noel"
    assert [(t["char"], t["replacement"]) for t in french["transliterated"]] == [
        ("ê", "e"),
        ("ë", "e"),
    ]
    assert (emoji["encoding"], emoji["data_coding"]) == ("ucs2", 8)
    assert emoji["forced_by"]["char"] == "🙂" and emoji["forced_by"]["index"] == 3
    assert long["parts"] == 2 and long["part_ends"] == [153, 200]
    assert long["within_max_parts"] is False and long["ok"] is False
    assert escapes["units"] == 200 and escapes["parts"] == 2  # '[' costs two septets


def test_openapi_document_is_published(mid_server: MidServer) -> None:
    with httpx.Client(base_url=mid_server.url) as client:
        document = client.get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/api/v1/token",
        "/api/v1/connection",
        "/api/v1/preview",
        "/api/v1/deliveries",
        "/api/v1/deliveries/{delivery_id}/messages",
        "/api/v1/deliveries/{delivery_id}/complete",
        "/api/v1/deliveries/{delivery_id}/pause",
        "/api/v1/deliveries/{delivery_id}/resume",
        "/api/v1/deliveries/{delivery_id}/cancel",
        "/api/v1/deliveries/{delivery_id}/statuses",
    ):
        assert path in paths, path
    assert {"HTTPBasic", "HTTPBearer"} <= set(document["components"]["securitySchemes"])


def test_requests_and_auth_failures_are_counted() -> None:
    from prometheus_client import REGISTRY

    assert (
        REGISTRY.get_sample_value(
            "smsmta_mid_requests_total",
            {"endpoint": "/api/v1/connection", "method": "GET", "status": "401"},
        )
        or 0
    ) >= 1
    assert (
        REGISTRY.get_sample_value("smsmta_mid_auth_failures_total", {"reason": "forbidden"}) or 0
    ) >= 1
    assert (
        REGISTRY.get_sample_value("smsmta_mid_pushed_chunks_total", {"account": "ops_sms"}) or 0
    ) >= 1


def test_password_never_reaches_the_log(mid_server: MidServer, capsys: Any) -> None:
    with mid_server.client("ops", "a-wrong-password-xyz") as client:
        client.get("/api/v1/connection")
    captured = capsys.readouterr()
    assert "a-wrong-password-xyz" not in captured.out + captured.err
    assert OPS_PASSWORD not in captured.out + captured.err
