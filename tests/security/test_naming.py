"""The mid account naming convention cannot be bent to route into another operator's account.

SPEC section 2: an operator pushing for marketing account M routes to the mid account
named `<operator login>_M`, and only if that account is enabled and is the operator's.
Operator `rival` tries to reach `ops_sms` (and `acme` tries `acme_fr_sms`, whose name is
exactly `acme` + `_fr_sms`) with crafted marketing account names: case changes, unicode
lookalikes and NFKC forms, whitespace, separators, SQL LIKE wildcards, path traversal,
overlong names, NUL bytes. Each is refused (422) with an error naming the field, nothing
is written, and the answer never tells another operator's account from a missing one.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from midsourcing import auth
from tests.security.conftest import MidServer

CRAFTED = [
    "ops_sms", "../ops_sms", "..%2Fops_sms", "/ops_sms", "..\\ops_sms", "sms/../../ops_sms",
    "SMS", "Sms", "\uff53\uff4d\uff53", "\u0455ms", "sm\u0455", "sms\u200b", "s\u00admss",
    " sms", "sms ", "sms\n", "sms\t", "\nsms", "sms\x00", "sms\x00ops", "s ms",
    "%", "_", "%sms", "s_s", "sm_", "%_sms", "*", "sms;--", "sms' OR '1'='1",
    "x" * 65, "x" * 10_000, "", ".", "..", "-sms", "_sms", "sms_", "ops", "ops_",
]  # fmt: skip


def bearer(server: MidServer, login: str) -> dict[str, str]:
    token, digest = auth.new_token()
    server.query(
        "INSERT INTO mid.operator_token (token_hash, operator_id, expires_at) "
        "SELECT %s, id, now() + interval '1 hour' FROM mid.operator WHERE login = %s",
        digest,
        login,
    )
    return {"Authorization": f"Bearer {token}"}


def written(server: MidServer) -> list[tuple[Any, ...]]:
    return server.query(
        "SELECT (SELECT count(*) FROM mid.delivery), (SELECT count(*) FROM mid.broad_log)"
    )


def attempts(client: httpx.Client, name: str) -> list[httpx.Response]:
    return [
        client.post(
            "/api/v1/deliveries",
            json={"marketing_account": name, "marketing_delivery_id": "steal", "label": "x"},
        ),
        client.post("/api/v1/preview", json={"marketing_account": name, "texts": ["x"]}),
    ]


@pytest.mark.timeout(60)
def test_crafted_marketing_account_names_never_reach_another_operators_account(
    rivals: MidServer, operators: dict[str, str]
) -> None:
    before = written(rivals)
    with httpx.Client(base_url=rivals.url, timeout=30, headers=bearer(rivals, "rival")) as client:
        for name in CRAFTED:
            for response in attempts(client, name):
                assert response.status_code == 422, f"{name!r}: {response.status_code}"
                body = response.json()
                assert body["errors"][0]["where"] == "body.marketing_account", (name, body)
                assert body["message"].startswith("body.marketing_account") or (
                    body["error"] == "unknown_account"
                    and repr(f"rival_{name}") in body["message"]
                    and "does not exist" in body["message"]
                ), (name, body)
                assert "disabled" not in body["message"], body
        own = client.post("/api/v1/preview", json={"marketing_account": "sms", "texts": ["x"]})
    assert own.status_code == 200 and own.json()["account"] == "rival_sms"  # the control
    assert written(rivals) == before


def test_an_operator_whose_login_prefixes_another_cannot_take_its_accounts(
    rivals: MidServer, operators: dict[str, str]
) -> None:
    before = written(rivals)
    with httpx.Client(base_url=rivals.url, timeout=30, headers=bearer(rivals, "acme")) as client:
        # acme + fr_sms spells acme_fr_sms, the account of operator acme_fr
        theirs = attempts(client, "fr_sms")
        missing = attempts(client, "zz_sms")
        connection = client.get("/api/v1/connection")
    for taken, none in zip(theirs, missing, strict=True):
        assert taken.status_code == none.status_code == 422
        assert taken.json()["error"] == "unknown_account"
        # the same sentence as for a name that exists nowhere: nothing tells it exists
        assert taken.text.replace("fr_sms", "zz_sms") == none.text
    assert connection.json()["accounts"] == []  # acme routes to nothing
    assert written(rivals) == before
    with httpx.Client(base_url=rivals.url, timeout=30, headers=bearer(rivals, "acme_fr")) as owner:
        mine = owner.post("/api/v1/preview", json={"marketing_account": "sms", "texts": ["x"]})
    assert mine.status_code == 200 and mine.json()["account"] == "acme_fr_sms"


@pytest.mark.parametrize(
    "login", ["OPS", "Ops", "ops ", " ops", "ops\n", "\uff4f\uff50\uff53", "ops\x00"]
)
def test_a_login_spelled_differently_is_not_the_operator(
    rivals: MidServer, operators: dict[str, str], login: str
) -> None:
    with httpx.Client(base_url=rivals.url, timeout=30) as client:
        response = client.get(
            "/api/v1/connection",
            headers={"Authorization": httpx.BasicAuth(login, operators["ops"])._auth_header},
        )
    assert response.status_code == 401, (login, response.text)
    assert response.json()["message"] == "wrong login or password"
