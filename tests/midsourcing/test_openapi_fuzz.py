"""Property-based run of schemathesis over the mid API's OpenAPI document: no 5xx.

Every operation of the published document is called with generated requests (valid and
invalid bodies, paths and queries) by an authenticated ADMINISTRATION operator, against
the real application and database; whatever it sends, the answer is never a 5xx.
Bounded: a few dozen examples per operation, well under a minute.
"""

from __future__ import annotations

import socket

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.midsourcing.conftest import MidServer


@pytest.fixture(scope="module")
def token(mid_server: MidServer) -> str:
    with mid_server.client() as client:
        return str(client.post("/api/v1/token").json()["token"])


@pytest.mark.timeout(120)
def test_no_request_gets_a_server_error(mid_server: MidServer, token: str) -> None:
    schema = schemathesis.openapi.from_url(f"{mid_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:500]}"
            )

        no_server_error()


def test_any_json_body_on_a_chunk_gets_4xx_not_5xx(mid_server: MidServer) -> None:
    bodies = [b"[]", b"null", b'{"messages": null}', b'{"messages": [{"id": -1}]}', b"\xff"]
    with mid_server.client() as client:
        delivery = client.post(
            "/api/v1/deliveries", json={"marketing_account": "sms", "marketing_delivery_id": "fz"}
        ).json()["id"]
        answers = [
            client.post(
                f"/api/v1/deliveries/{delivery}/messages",
                content=body,
                headers={"Content-Type": "application/json"},
            ).status_code
            for body in bodies
        ]
    host, port = mid_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /api/v1/deliveries/{delivery}/messages HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n".encode()
        )
        huge = sock.recv(4096).decode(errors="replace")
    assert all(400 <= code < 500 for code in answers), answers
    assert huge.startswith("HTTP/1.1 413"), huge
