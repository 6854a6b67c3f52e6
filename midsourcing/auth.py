"""Operators of the mid server: their passwords, rights, tokens and failed logins.

An operator (SPEC section 2, object 1) has a login, a label, an optional password kept
only as an argon2id hash (argon2-cffi, salted, slow on purpose) and named rights; the
`ADMINISTRATION` right is what the mid API asks for. `authenticate_password()` checks a
login and password: an unknown login, an operator without a password and a wrong
password all take the same argon2 verification and give the same answer, so neither the
answer nor its time tells whether a login exists. Failures are counted per login name
(existing or not) in `mid.login_failure`: after `free_failures` of them each new attempt
must wait an exponentially growing delay (at most `max_delay`), during which attempts are
refused without looking at the password. Tokens are random 256-bit strings given out by
the API; only their SHA-256 is stored, so a token lookup is a constant-time hash match
and a stolen database holds no usable token. Changing an operator's password or rights
revokes its tokens.

The operator commands of the CLI use the synchronous functions; the API the async ones.
Touches: the mid schema (operator, operator_token, login_failure); never logs a password.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ADMINISTRATION = "ADMINISTRATION"
LOGIN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
RIGHT_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
FAILURE_MEMORY = timedelta(hours=1)
"""A login's failures older than this are forgotten."""

_HASHER = PasswordHasher()


class OperatorError(ValueError):
    """An operator command that cannot be done (unknown login, bad right, ...)."""


@dataclass(frozen=True)
class OperatorRecord:
    id: int
    login: str
    label: str
    rights: tuple[str, ...]
    has_password: bool
    created_at: datetime | None = None


class Throttled(Exception):
    """Too many failed logins for this login name: retry after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1.0, retry_after)
        super().__init__(f"too many failed logins: retry in {self.retry_after:.0f} s")


def hash_password(password: str) -> str:
    if not password:
        raise OperatorError("the password is empty")
    return _HASHER.hash(password)


@cache
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """argon2 verification; without a hash, verify against a dummy one (same time, False)."""
    try:
        ok = _HASHER.verify(password_hash or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and password_hash is not None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and its stored hash."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def check_login(login: str) -> str:
    if not LOGIN_PATTERN.fullmatch(login):
        raise OperatorError(
            f"invalid login {login!r}: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return login


def normalize_rights(rights: list[str] | tuple[str, ...]) -> list[str]:
    result: list[str] = []
    for right in rights:
        name = right.strip().upper()
        if not RIGHT_PATTERN.fullmatch(name):
            raise OperatorError(f"invalid right {right!r}: upper-case letters, digits and '_'")
        if name not in result:
            result.append(name)
    return result


def failure_delay(
    failures: int, free_failures: int, max_delay: float, base_delay: float = 1.0
) -> float:
    """Seconds a login must wait after its `failures`-th failure in a row: 0 while within
    the free failures, then base, 2 x base, 4 x base... up to `max_delay`."""
    over = failures - free_failures + 1
    if failures < free_failures or over <= 0:
        return 0.0
    return float(min(max_delay, base_delay * 2 ** min(over - 1, 30)))


# --- the API's side (async) ---------------------------------------------------------------

OPERATOR_BY_LOGIN = """
SELECT id, login, label, rights, password_hash FROM mid.operator WHERE login = %s
"""
BLOCKED_FOR = """
SELECT extract(epoch FROM blocked_until - now()) FROM mid.login_failure
WHERE login = %s AND blocked_until > now()
"""
RECORD_FAILURE = """
INSERT INTO mid.login_failure AS f (login, failures, last_failure_at)
VALUES (%(login)s, 1, now())
ON CONFLICT (login) DO UPDATE
SET failures = CASE WHEN f.last_failure_at < now() - %(memory)s THEN 1 ELSE f.failures + 1 END,
    last_failure_at = now()
RETURNING failures
"""
SET_BLOCK = """
UPDATE mid.login_failure SET blocked_until = now() + make_interval(secs => %s) WHERE login = %s
"""
FORGET_OLD_FAILURES = """
DELETE FROM mid.login_failure WHERE last_failure_at < now() - %s
"""


async def authenticate_password(
    conn: psycopg.AsyncConnection,
    login: str,
    password: str,
    *,
    free_failures: int,
    max_delay: float,
    base_delay: float = 1.0,
) -> OperatorRecord | None:
    """The operator whose login and password these are, else None; raises Throttled.

    The argon2 verification runs in a worker thread (it takes tens of milliseconds).
    """
    import asyncio

    known_login = bool(LOGIN_PATTERN.fullmatch(login))
    if known_login:
        cursor = await conn.execute(BLOCKED_FOR, (login,))
        blocked = await cursor.fetchone()
        if blocked is not None:
            raise Throttled(float(blocked[0]))
        cursor = await conn.execute(OPERATOR_BY_LOGIN, (login,))
        row = await cursor.fetchone()
    else:
        row = None
    stored_hash = row[4] if row is not None else None
    ok = await asyncio.to_thread(verify_password, stored_hash, password)
    if ok and row is not None:
        await conn.execute("DELETE FROM mid.login_failure WHERE login = %s", (login,))
        return OperatorRecord(row[0], row[1], row[2], tuple(row[3] or ()), True)
    if known_login:
        cursor = await conn.execute(RECORD_FAILURE, {"login": login, "memory": FAILURE_MEMORY})
        failures = (await cursor.fetchone() or (1,))[0]
        delay = failure_delay(int(failures), free_failures, max_delay, base_delay)
        if delay:
            await conn.execute(SET_BLOCK, (delay, login))
        if secrets.randbelow(100) == 0:  # now and then, forget stale failures
            await conn.execute(FORGET_OLD_FAILURES, (FAILURE_MEMORY,))
    return None


TOKEN_LOOKUP = """
SELECT o.id, o.login, o.label, o.rights, o.password_hash IS NOT NULL
FROM mid.operator_token t JOIN mid.operator o ON o.id = t.operator_id
WHERE t.token_hash = %s AND t.expires_at > now()
"""


async def authenticate_token(conn: psycopg.AsyncConnection, token: str) -> OperatorRecord | None:
    if not token or len(token) > 256:
        return None
    cursor = await conn.execute(TOKEN_LOOKUP, (token_hash(token),))
    row = await cursor.fetchone()
    if row is None:
        return None
    return OperatorRecord(row[0], row[1], row[2], tuple(row[3] or ()), bool(row[4]))


async def issue_token(
    conn: psycopg.AsyncConnection, operator: OperatorRecord, ttl: float
) -> tuple[str, datetime]:
    token, digest = new_token()
    cursor = await conn.execute(
        "INSERT INTO mid.operator_token (token_hash, operator_id, expires_at) "
        "VALUES (%s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
        (digest, operator.id, ttl),
    )
    row = await cursor.fetchone()
    assert row is not None
    await conn.execute("DELETE FROM mid.operator_token WHERE expires_at < now()")
    return token, row[0]


# --- the operator commands (sync) ---------------------------------------------------------


def _record(row: tuple[object, ...]) -> OperatorRecord:
    return OperatorRecord(
        int(row[0]),  # type: ignore[call-overload]
        str(row[1]),
        str(row[2]),
        tuple(row[3] or ()),  # type: ignore[arg-type]
        bool(row[4]),
        row[5],  # type: ignore[arg-type]
    )


_SELECT = "SELECT id, login, label, rights, password_hash IS NOT NULL, created_at FROM mid.operator"


def add_operator(
    dsn: str, login: str, label: str, password: str | None, rights: list[str]
) -> OperatorRecord:
    check_login(login)
    if not label.strip():
        raise OperatorError("the label is required")
    digest = hash_password(password) if password is not None else None
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute(
                "INSERT INTO mid.operator (login, label, password_hash, rights) "
                "VALUES (%s, %s, %s, %s) "
                "RETURNING id, login, label, rights, password_hash IS NOT NULL, created_at",
                (login, label, digest, normalize_rights(rights)),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise OperatorError(f"operator {login!r} exists already") from None
    assert row is not None
    return _record(row)


def set_password(dsn: str, login: str, password: str) -> OperatorRecord:
    digest = hash_password(password)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "UPDATE mid.operator SET password_hash = %s, updated_at = now() WHERE login = %s "
            "RETURNING id, login, label, rights, password_hash IS NOT NULL, created_at",
            (digest, login),
        ).fetchone()
        if row is None:
            raise OperatorError(f"no operator {login!r}")
        conn.execute("DELETE FROM mid.operator_token WHERE operator_id = %s", (row[0],))
        conn.execute("DELETE FROM mid.login_failure WHERE login = %s", (login,))
    return _record(row)


def set_rights(
    dsn: str, login: str, *, add: list[str], remove: list[str], replace: list[str] | None
) -> OperatorRecord:
    with psycopg.connect(dsn) as conn:
        current = conn.execute(
            "SELECT rights FROM mid.operator WHERE login = %s FOR UPDATE", (login,)
        ).fetchone()
        if current is None:
            raise OperatorError(f"no operator {login!r}")
        rights = normalize_rights(replace if replace is not None else list(current[0] or ()))
        rights = [r for r in normalize_rights(rights + add) if r not in normalize_rights(remove)]
        row = conn.execute(
            "UPDATE mid.operator SET rights = %s, updated_at = now() WHERE login = %s "
            "RETURNING id, login, label, rights, password_hash IS NOT NULL, created_at",
            (rights, login),
        ).fetchone()
        assert row is not None
        conn.execute("DELETE FROM mid.operator_token WHERE operator_id = %s", (row[0],))
    return _record(row)


def list_operators(dsn: str) -> list[OperatorRecord]:
    with psycopg.connect(dsn) as conn:
        return [_record(row) for row in conn.execute(_SELECT + " ORDER BY login").fetchall()]


def remove_operator(dsn: str, login: str) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("DELETE FROM mid.operator WHERE login = %s RETURNING id", (login,))
        if row.fetchone() is None:
            raise OperatorError(f"no operator {login!r}")
