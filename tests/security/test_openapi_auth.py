"""Every endpoint of the mid API refuses unauthenticated and under-privileged callers.

The walk takes its operations from the running server's /openapi.json and from the
application's own route table (which also holds routes hidden from the document, such
as /status), so an endpoint added later without authentication makes this test fail;
only PUBLIC_PATHS may answer without credentials. For every operation:

- no credentials, a wrong password, a malformed Basic header, an unknown token: 401 with
  a Problem body that holds no data, whatever the body (even malformed JSON);
- an operator without the ADMINISTRATION right: 403;
- an ADMINISTRATION operator on another operator's delivery (path parameters filled with
  the real id of the other operator's object, the body valid): 404, the very answer of a
  delivery that does not exist, and the object unchanged; the owner then gets a non-404.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from midsourcing import auth
from midsourcing.api import PUBLIC_PATHS, create_app
from tests.security.conftest import MidServer

NO_SUCH_DELIVERY = 2**62

# A valid body for each request schema of the document. A new schema without one here
# fails the walk: add a valid example, so that the ownership check sees a real request.
BODIES: dict[str, dict[str, Any]] = {
    "Chunk": {"messages": [{"id": 1, "to": "+33612345678", "text": "walk"}]},
    "PushComplete": {"total": 0},
    "DeliveryCreate": {"marketing_account": "sms", "marketing_delivery_id": "walk-new"},
    "PreviewRequest": {"marketing_account": "sms", "texts": ["walk"]},
}


def operations(server: MidServer) -> list[tuple[str, str, str | None]]:
    """(method, path template, request schema name) of every documented or routed operation."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        document = client.get("/openapi.json").json()
    found: dict[tuple[str, str], str | None] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            schema = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
            )
            ref = schema.get("$ref", "")
            found[(method.upper(), path)] = ref.rsplit("/", 1)[-1] or None
    for route in create_app(server.config, server.dsn).routes:
        path = getattr(route, "path", "")
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.setdefault((method, path), None)
    return [(method, path, schema) for (method, path), schema in sorted(found.items())]


def url(path: str, delivery_id: int) -> str:
    return re.sub(r"\{[^}]+\}", str(delivery_id), path)


def body_of(schema: str | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    assert schema in BODIES, f"no valid example body for the request schema {schema}"
    return BODIES[schema]


def token(server: MidServer, login: str, password: str) -> str:
    with server.client(login, password) as client:
        response = client.post("/api/v1/token")
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def new_delivery(client: httpx.Client, tag: str) -> int:
    response = client.post(
        "/api/v1/deliveries",
        json={"marketing_account": "sms", "marketing_delivery_id": f"{tag}-{time.monotonic_ns()}"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def snapshot(server: MidServer, delivery_id: int) -> list[tuple[Any, ...]]:
    return server.query(
        "SELECT row_to_json(d)::text, (SELECT count(*) FROM mid.broad_log b "
        "WHERE b.delivery_id = d.id) FROM mid.delivery d WHERE d.id = %s",
        delivery_id,
    )


def assert_no_data(response: httpx.Response, status: int, what: str) -> None:
    assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
    body = response.json()
    assert set(body) == {"error", "message", "errors"}, f"{what}: {body}"
    assert body["errors"] == [], f"{what}: {body}"


@pytest.mark.timeout(120)
def test_every_operation_refuses_unauthenticated_and_under_privileged_callers(
    rivals: MidServer, operators: dict[str, str]
) -> None:
    walk = operations(rivals)
    assert len(walk) >= 12, walk
    gated = [(m, p, s) for m, p, s in walk if p not in PUBLIC_PATHS]
    assert {p for _m, p, _s in walk} - {p for _m, p, _s in gated} <= PUBLIC_PATHS
    assert ("GET", "/status", None) in gated  # hidden from the document, gated all the same
    ops = {"Authorization": f"Bearer {token(rivals, 'ops', operators['ops'])}"}
    rival = {"Authorization": f"Bearer {token(rivals, 'rival', operators['rival'])}"}
    anonymous: list[tuple[str, dict[str, str]]] = [
        ("no credentials", {}),
        ("a wrong password", {"Authorization": httpx.BasicAuth("ops", "wrong!")._auth_header}),
        ("an unknown login", {"Authorization": httpx.BasicAuth("nobody", "x")._auth_header}),
        ("a malformed Basic header", {"Authorization": "Basic !!!"}),
        ("an unknown token", {"Authorization": "Bearer " + "x" * 43}),
        ("another scheme", {"Authorization": "Digest username=ops"}),
    ]
    # the viewer cannot get a token from the API (no right): give it one as the API would
    viewer_token, digest = auth.new_token()
    rivals.query(
        "INSERT INTO mid.operator_token (token_hash, operator_id, expires_at) "
        "SELECT %s, id, now() + interval '1 hour' FROM mid.operator WHERE login = 'viewer'",
        digest,
    )
    viewer = f"Bearer {viewer_token}"
    assert rivals.query("SELECT count(*) FROM mid.operator WHERE login = 'viewer'") == [(1,)]
    with (
        httpx.Client(base_url=rivals.url, timeout=30) as client,
        httpx.Client(base_url=rivals.url, timeout=30, headers=ops) as owner,
    ):
        for method, path, schema in gated:
            what = f"{method} {path}"
            victim = new_delivery(owner, "victim")
            before = snapshot(rivals, victim)
            body = body_of(schema)
            target = url(path, victim)
            for index, (who, headers) in enumerate(anonymous):
                # every kind of body without credentials; one body each with bad ones
                contents = (None, b"{", b"[" * 5000) if index == 0 else (b"[" * index,)
                for content in contents:
                    kwargs: dict[str, Any] = (
                        {"json": body}
                        if content is None
                        else {"content": content, "headers": {"Content-Type": "application/json"}}
                    )
                    kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
                    response = client.request(method, target, **kwargs)
                    assert_no_data(response, 401, f"{what} with {who}")
                    assert "Basic" in response.headers["www-authenticate"]
            response = client.request(method, target, json=body, headers={"Authorization": viewer})
            assert_no_data(response, 403, f"{what} by an operator without ADMINISTRATION")
            assert "ADMINISTRATION" in response.json()["message"]
            if "{" in path:
                theirs = client.request(method, target, json=body, headers=rival)
                missing = client.request(
                    method, url(path, NO_SUCH_DELIVERY), json=body, headers=rival
                )
                assert theirs.status_code == missing.status_code == 404, (
                    f"{what} on another operator's delivery: {theirs.status_code} "
                    f"{theirs.text}; on none: {missing.status_code}"
                )
                assert theirs.json() == {
                    **missing.json(),
                    "message": missing.json()["message"].replace(
                        str(NO_SUCH_DELIVERY), str(victim)
                    ),
                }, what  # the same answer as a delivery that does not exist
                assert snapshot(rivals, victim) == before, f"{what} changed the victim's delivery"
                mine = client.request(method, target, json=body, headers=ops)
                assert mine.status_code in (200, 201, 409), f"{what} by its owner: {mine.text}"
