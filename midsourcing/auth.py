"""Operators of the mid server: their passwords, rights, tokens and failed logins.

An operator (SPEC section 2, object 1) has a login, a label, an optional password kept
only as an argon2id hash (argon2-cffi, salted, slow on purpose) and named rights; the
`ADMINISTRATION` right is what the mid API asks for. `Authenticator.password()` checks a
login and password for the API: an unknown login, a malformed one, an operator without a
password and a wrong password all take the same argon2 verification and give the same
answer, so neither the answer nor its time tells whether a login exists. The checks run
in a small thread pool with a bounded queue (`PasswordChecker`: a full queue answers Busy
at once), never on the event loop and never while holding a database connection; before
any of that, each client address spends an attempt from its bucket (`AttemptLimiter`,
bounded memory). Failures are counted per (login, client address) in `mid.login_failure`:
after `free_failures` of them that address must wait an exponentially growing delay (at
most `max_delay`) before trying that login again, while the operator's own address keeps
working. Tokens are random 256-bit strings given out by the API for a login and password
(never for a token); only their SHA-256 is stored, so a token lookup is a constant-time
hash match and a stolen database holds no usable token; a token is refused past
`token_max_lifetime` after its issue, whatever its expiry says. Changing an operator's
password or rights revokes its tokens.

The operator commands of the CLI use the synchronous functions; the API the async ones.
Touches: the mid schema (operator, operator_token, login_failure); never logs a password.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from smsmta.backoff import Backoff

ADMINISTRATION = "ADMINISTRATION"
MONITORING = "MONITORING"  # read the status page of every operator's accounts
LOGIN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
RIGHT_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
FAILURE_MEMORY = timedelta(hours=1)
"""A login's failures older than this are forgotten."""
DEFAULT_TOKEN_MAX_LIFETIME = 12 * 3600.0
"""Seconds a token lives at most after its issue (mid.token_max_lifetime's default)."""

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
    """Too many attempts or failed logins: retry after `retry_after` seconds."""

    def __init__(self, retry_after: float, what: str = "too many failed logins") -> None:
        self.retry_after = max(1.0, retry_after)
        super().__init__(f"{what}: retry in {self.retry_after:.0f} s")


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
    return Backoff(base_delay, max_delay).delay(over)


# --- the API's side (async) ---------------------------------------------------------------

Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]
"""A short-lived database connection: `async with connect() as conn:` (the API's pool)."""


class Busy(Exception):
    """Every password-check worker is busy and the queue is full: retry after `retry_after`."""

    def __init__(self, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many password checks at once: retry in {retry_after:.0f} s")


def client_key(address: str | None) -> str:
    """The key the limits keep for a client address: the IPv4 address, or the /64 network of
    an IPv6 one (a single subscriber gets a whole /64); '' when the address is unknown."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class AttemptLimiter:
    """A token bucket per client address for password attempts, in bounded memory.

    An address may make `burst` attempts at once, refilled at `rate` a second; an attempt
    that succeeds is given back, so a client that knows its password is never limited.
    At most `max_clients` addresses are remembered, the least recently seen forgotten
    first (a forgotten address starts again with a full bucket). Each mid server keeps its
    own: it protects that server's CPU. Not thread-safe: the event loop's thread only.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take one attempt for `client`: 0.0 if it may go on, else the seconds to wait."""
        now = self._clock()
        tokens, stamp = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def give_back(self, client: str) -> None:
        entry = self._buckets.get(client)
        if entry is not None:
            self._buckets[client] = (min(float(self.burst), entry[0] + 1.0), entry[1])


class PasswordChecker:
    """argon2 verifications in a thread pool of `workers`, with at most `queue` waiting.

    A check asked for when `workers + queue` are already pending raises Busy at once
    instead of piling up: memory (64 MiB a check) and CPU stay bounded whatever the
    traffic, and the event loop never runs a check. Used from the event loop's thread.
    """

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self.capacity = workers + queue
        self.pending = 0

    @property
    def full(self) -> bool:
        return self.pending >= self.capacity

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if self.full:
            raise Busy()
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, verify_password, password_hash, password
            )
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


OPERATOR_BY_LOGIN = """
SELECT id, login, label, rights, password_hash FROM mid.operator WHERE login = %s
"""
BLOCKED_FOR = """
SELECT extract(epoch FROM blocked_until - now()) FROM mid.login_failure
WHERE login = %s AND client_address = %s AND blocked_until > now()
"""
RECORD_FAILURE = """
INSERT INTO mid.login_failure AS f (login, client_address, failures, last_failure_at)
VALUES (%(login)s, %(client)s, 1, now())
ON CONFLICT (login, client_address) DO UPDATE
SET failures = CASE WHEN f.last_failure_at < now() - %(memory)s THEN 1 ELSE f.failures + 1 END,
    last_failure_at = now()
RETURNING failures
"""
SET_BLOCK = """
UPDATE mid.login_failure SET blocked_until = now() + make_interval(secs => %s)
WHERE login = %s AND client_address = %s
"""
FORGET_FAILURES = """
DELETE FROM mid.login_failure WHERE login = %s AND client_address = %s
"""
FORGET_OLD_FAILURES = """
DELETE FROM mid.login_failure WHERE last_failure_at < now() - %s
"""


class Authenticator:
    """Login and password checks of the API, in the order that keeps them cheap to refuse.

    1. the client address's attempt bucket (AttemptLimiter): empty -> Throttled, no work;
    2. the check queue (PasswordChecker): full -> Busy, no work;
    3. a short database read: is this (login, client address) slowed down -> Throttled;
       the operator's hash; the connection goes back to the pool at once;
    4. argon2 in the checker's threads (a dummy hash for an unknown or malformed login:
       the same work, the same answer, the same time);
    5. a short write: success forgets this address's failures for the login; a failure is
       counted for (login, client address) and, past `free_failures`, slows that pair down.

    No per-login ceiling over all addresses: it would let anyone who knows a login lock its
    operator out from everywhere, the very attack keyed slow-downs prevent. Guessing from
    many addresses stays bounded by each address's bucket, each pair's slow-down and, for
    the whole server, by the checker: at most `workers` argon2 checks at a time.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        workers: int,
        queue: int,
        attempts_per_second: float,
        attempts_burst: int,
        clients_tracked: int,
        free_failures: int,
        max_delay: float,
        base_delay: float = 1.0,
    ) -> None:
        self._connect = connect
        self.checker = PasswordChecker(workers, queue)
        self.limiter = AttemptLimiter(attempts_per_second, attempts_burst, clients_tracked)
        self.free_failures, self.max_delay, self.base_delay = free_failures, max_delay, base_delay

    async def password(
        self, login: str, password: str, client_address: str | None
    ) -> OperatorRecord | None:
        """The operator whose login and password these are, else None.

        Raises Throttled (this address made too many attempts, or too many failures for
        this login) and Busy (the checks' queue is full).
        """
        client = client_key(client_address)
        wait = self.limiter.take(client)
        if wait:
            raise Throttled(wait, "too many login attempts from this address")
        if self.checker.full:
            raise Busy()
        well_formed = bool(LOGIN_PATTERN.fullmatch(login))
        row = None
        if well_formed:
            async with self._connect() as conn:
                cursor = await conn.execute(BLOCKED_FOR, (login, client))
                blocked = await cursor.fetchone()
                if blocked is not None:
                    raise Throttled(float(blocked[0]))
                cursor = await conn.execute(OPERATOR_BY_LOGIN, (login,))
                row = await cursor.fetchone()
        stored_hash = row[4] if row is not None else None
        ok = await self.checker.verify(stored_hash, password)
        if ok and row is not None:
            self.limiter.give_back(client)
            async with self._connect() as conn:
                await conn.execute(FORGET_FAILURES, (login, client))
            return OperatorRecord(row[0], row[1], row[2], tuple(row[3] or ()), True)
        if well_formed:
            async with self._connect() as conn:
                cursor = await conn.execute(
                    RECORD_FAILURE, {"login": login, "client": client, "memory": FAILURE_MEMORY}
                )
                failures = (await cursor.fetchone() or (1,))[0]
                delay = failure_delay(
                    int(failures), self.free_failures, self.max_delay, self.base_delay
                )
                if delay:
                    await conn.execute(SET_BLOCK, (delay, login, client))
                if secrets.randbelow(100) == 0:  # now and then, forget stale failures
                    await conn.execute(FORGET_OLD_FAILURES, (FAILURE_MEMORY,))
        return None

    def close(self) -> None:
        self.checker.close()


TOKEN_LOOKUP = """
SELECT o.id, o.login, o.label, o.rights, o.password_hash IS NOT NULL
FROM mid.operator_token t JOIN mid.operator o ON o.id = t.operator_id
WHERE t.token_hash = %s AND t.expires_at > now()
  AND t.created_at > now() - make_interval(secs => %s)
"""


async def authenticate_token(
    conn: psycopg.AsyncConnection, token: str, max_lifetime: float = DEFAULT_TOKEN_MAX_LIFETIME
) -> OperatorRecord | None:
    """The operator of a token still within its expiry and `max_lifetime` of its issue."""
    if not token or len(token) > 256:
        return None
    cursor = await conn.execute(TOKEN_LOOKUP, (token_hash(token), max_lifetime))
    row = await cursor.fetchone()
    if row is None:
        return None
    return OperatorRecord(row[0], row[1], row[2], tuple(row[3] or ()), bool(row[4]))


async def issue_token(
    conn: psycopg.AsyncConnection,
    operator: OperatorRecord,
    ttl: float,
    max_lifetime: float = DEFAULT_TOKEN_MAX_LIFETIME,
) -> tuple[str, datetime]:
    """A new token for `operator`, valid `ttl` seconds but never over `max_lifetime`."""
    token, digest = new_token()
    cursor = await conn.execute(
        "INSERT INTO mid.operator_token (token_hash, operator_id, expires_at) "
        "VALUES (%s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
        (digest, operator.id, min(ttl, max_lifetime)),
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
