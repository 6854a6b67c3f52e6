"""Operators' passwords: argon2id hashes only, verified, never stored or echoed in clear."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from midsourcing import auth
from tests.security.conftest import MidServer


def test_stored_hashes_are_argon2id_and_no_password_is_stored_in_clear(
    rivals: MidServer, operators: dict[str, str]
) -> None:
    rows = dict(rivals.query("SELECT login, password_hash FROM mid.operator"))
    assert set(operators) <= set(rows)
    for login, password in operators.items():
        stored = rows[login]
        assert stored.startswith("$argon2id$v=19$m="), (login, stored[:20])
        params = dict(p.split("=") for p in stored.split("$")[3].split(","))
        assert int(params["m"]) >= 19_456 and int(params["t"]) >= 2  # OWASP's floor
        assert PasswordHasher().verify(stored, password)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(rows["ops"], operators["ops"] + "x")
    assert not auth.verify_password(rows["ops"], operators["ops"].upper())
    salts = {stored.rsplit("$", 2)[1] for stored in rows.values()}
    assert len(salts) == len(rows)  # salted: acme and acme_fr share a password, not a hash
    # no column of any table of either schema holds a password in clear
    dump = rivals.query(
        "SELECT string_agg(t::text, ' ') FROM ("
        "SELECT row_to_json(o)::text AS t FROM mid.operator o UNION ALL "
        "SELECT row_to_json(x)::text FROM mid.operator_token x UNION ALL "
        "SELECT row_to_json(f)::text FROM mid.login_failure f) s"
    )[0][0]
    for password in operators.values():
        assert password not in dump


@pytest.mark.parametrize("login", ["ops\n", "ops ", "", "-ops", "o" * 65, "op\u0455", "ops\x00"])
def test_an_operator_login_is_exactly_the_documented_characters(login: str) -> None:
    with pytest.raises(auth.OperatorError, match="invalid login"):
        auth.check_login(login)
