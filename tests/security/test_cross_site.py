"""Issue 14: a web page cannot make an operator's browser change a delivery.

State-changing requests (POST and the other unsafe methods) take `application/json`
bodies only: a form-encoded, multipart or text/plain body (what an HTML form can send
to another site without asking) gets 415; a request whose `Origin` is not the API's own
gets 403. Neither touches the delivery. The marketing service (no Origin, JSON or no
body) and the API's own origin are unaffected.
"""

from __future__ import annotations

import httpx
import pytest

from tests.midsourcing.conftest import OPS_PASSWORD
from tests.security.conftest import MidServer


def _delivery(rivals: MidServer, name: str) -> int:
    with rivals.client() as client:
        created = client.post(
            "/api/v1/deliveries", json={"marketing_account": "sms", "marketing_delivery_id": name}
        )
    assert created.status_code in (200, 201), created.text
    return int(created.json()["id"])


def _state(rivals: MidServer, delivery: int) -> str:
    with rivals.client() as client:
        return str(client.get(f"/api/v1/deliveries/{delivery}").json()["state"])


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"confirm=1", "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b--\r\n",
         "multipart/form-data; boundary=b"),
        (b'{"x": 1}', "text/plain"),
        (b"", "text/plain"),
    ],
)  # fmt: skip
def test_a_form_post_to_cancel_gets_415_and_cancels_nothing(
    rivals: MidServer, operators: dict[str, str], content: bytes, content_type: str
) -> None:
    delivery = _delivery(rivals, f"form-{content_type[:4]}-{len(content)}")
    before = _state(rivals, delivery)
    with httpx.Client(base_url=rivals.url, auth=("ops", OPS_PASSWORD), timeout=30) as client:
        response = client.post(
            f"/api/v1/deliveries/{delivery}/cancel",
            content=content,
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert _state(rivals, delivery) == before != "cancelled"


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
def test_a_foreign_origin_gets_403_and_cancels_nothing(
    rivals: MidServer, operators: dict[str, str], origin: str
) -> None:
    delivery = _delivery(rivals, f"origin-{abs(hash(origin)) % 10_000}")
    before = _state(rivals, delivery)
    with rivals.client() as client:
        response = client.post(
            f"/api/v1/deliveries/{delivery}/cancel", json={}, headers={"Origin": origin}
        )
        bodyless = client.post(f"/api/v1/deliveries/{delivery}/cancel", headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert bodyless.status_code == 403, bodyless.text
    assert response.json()["error"] == "foreign_origin"
    assert _state(rivals, delivery) == before != "cancelled"


def test_own_origin_and_the_marketing_client_still_change_state(
    rivals: MidServer, operators: dict[str, str]
) -> None:
    first, second = _delivery(rivals, "own-origin"), _delivery(rivals, "no-origin")
    with rivals.client() as client:
        own = client.post(f"/api/v1/deliveries/{first}/cancel", headers={"Origin": rivals.url})
        plain = client.post(f"/api/v1/deliveries/{second}/pause")
        read = client.get(f"/api/v1/deliveries/{second}", headers={"Origin": "https://x.example"})
    assert own.status_code == 200, own.text
    assert plain.status_code == 200, plain.text
    assert read.status_code == 200, read.text  # reading is not a state change
    assert _state(rivals, first) == "cancelled"
