"""What the mid API's routers share: the application's state and the FastAPI dependencies.

`MidApi` is the state of one application (settings, accounts, the database pool, the
password checks), kept at `app.state.mid` by `midsourcing.api.create_app`; routes get it
with the `State` dependency, a pool connection with `Conn`, the authenticated operator
with `Operator` (any right) or `Admin` (ADMINISTRATION). `authenticate()` is also what the
API's gate calls before any route runs; the dependencies reuse the operator the gate put
in the request's scope (OPERATOR_SCOPE_KEY) instead of authenticating twice. The HTTP
Basic and bearer schemes are declared here, so the OpenAPI document names both.
Touches: the mid schema (operators, tokens, login failures) through the pool; metrics.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Path, Request
from fastapi.security import HTTPBasic, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from midsourcing import auth
from midsourcing.routers.errors import CHALLENGE, ApiError
from smsmta import obs
from smsmta.settings import Account, MidConfig, MidService

OPERATOR_SCOPE_KEY = "smsmta.operator"
"""Where the gate leaves the operator it authenticated, in the ASGI scope."""


@dataclass
class MidApi:
    """One mid API application's state: what its routes and its gate need."""

    config: MidConfig
    dsn: str
    pool: AsyncConnectionPool[psycopg.AsyncConnection] | None = None
    """Open during the application's lifespan only (midsourcing.db_pool)."""
    accounts: dict[str, Account] = field(init=False)
    passwords: auth.Authenticator = field(init=False)

    def __post_init__(self) -> None:
        service = self.config.mid
        self.accounts = {account.name: account for account in self.config.accounts}
        self.passwords = auth.Authenticator(
            self.connection,
            workers=service.password_check_workers,
            queue=service.password_check_queue,
            attempts_per_second=service.login_attempts_per_second,
            attempts_burst=service.login_attempts_burst,
            clients_tracked=service.login_clients_tracked,
            free_failures=service.login_free_failures,
            max_delay=service.login_max_delay,
            base_delay=service.login_base_delay,
        )

    @property
    def service(self) -> MidService:
        return self.config.mid

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        """A pool connection: `async with api.connection() as conn:`."""
        if self.pool is None:
            raise RuntimeError("the mid API's database pool is open only during its lifespan")
        return self.pool.connection()


def api_state(request: Request) -> MidApi:
    """The state of the application serving `request`."""
    state: MidApi = request.app.state.mid
    return state


State = Annotated[MidApi, Depends(api_state)]


async def connection(api: State) -> AsyncIterator[psycopg.AsyncConnection]:
    async with api.connection() as conn:
        yield conn


Conn = Annotated[psycopg.AsyncConnection, Depends(connection)]

basic_scheme = HTTPBasic(auto_error=False, description="operator login and password")
bearer_scheme = HTTPBearer(auto_error=False, description="token from POST /api/v1/token")


async def authenticate(api: MidApi, header: str, client: str | None) -> auth.OperatorRecord:
    """The operator an Authorization header names; ApiError 401, 429 or 503 otherwise.

    A database connection is held only for each short query, never during argon2."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        async with api.connection() as conn:
            operator = await auth.authenticate_token(conn, value, api.service.token_max_lifetime)
        if operator is None:
            obs.MID_AUTH_FAILURES.labels("bad_token").inc()
            raise ApiError(401, "unauthorized", "invalid or expired token", CHALLENGE)
        return operator
    if scheme == "basic" and value:
        return await _password(api, value, client)
    obs.MID_AUTH_FAILURES.labels("missing").inc()
    raise ApiError(401, "unauthorized", "authenticate with HTTP Basic or a bearer token", CHALLENGE)


async def _password(api: MidApi, value: str, client: str | None) -> auth.OperatorRecord:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    login, colon, password = decoded.partition(":")
    if not colon:
        obs.MID_AUTH_FAILURES.labels("bad_credentials").inc()
        raise ApiError(401, "unauthorized", "malformed Basic credentials", CHALLENGE)
    try:
        operator = await api.passwords.password(login, password, client)
    except auth.Throttled as exc:
        obs.MID_AUTH_FAILURES.labels("throttled").inc()
        raise ApiError(
            429, "too_many_failures", str(exc), {"Retry-After": _retry_after(exc.retry_after)}
        ) from None
    except auth.Busy as exc:
        obs.MID_AUTH_FAILURES.labels("busy").inc()
        raise ApiError(
            503, "busy", str(exc), {"Retry-After": _retry_after(exc.retry_after)}
        ) from None
    if operator is None:
        obs.MID_AUTH_FAILURES.labels("bad_credentials").inc()
        raise ApiError(401, "unauthorized", "wrong login or password", CHALLENGE)
    return operator


def _retry_after(seconds: float) -> str:
    return str(int(seconds + 0.999))


def require_administration(operator: auth.OperatorRecord) -> auth.OperatorRecord:
    """`operator`, if it holds the ADMINISTRATION right; ApiError 403 otherwise."""
    if auth.ADMINISTRATION not in operator.rights:
        obs.MID_AUTH_FAILURES.labels("forbidden").inc()
        raise ApiError(
            403,
            "forbidden",
            f"operator {operator.login!r} lacks the {auth.ADMINISTRATION} right: "
            f"grant it with 'smsmta operator rights {operator.login} --add "
            f"{auth.ADMINISTRATION}'",
        )
    return operator


async def authenticated(
    request: Request,
    api: State,
    _basic: Annotated[Any, Depends(basic_scheme)] = None,
    _bearer: Annotated[Any, Depends(bearer_scheme)] = None,
) -> auth.OperatorRecord:
    known = request.scope.get(OPERATOR_SCOPE_KEY)
    if isinstance(known, auth.OperatorRecord):  # the gate authenticated the request
        return known
    client = request.client.host if request.client else None
    return await authenticate(api, request.headers.get("authorization", ""), client)


async def administrator(
    operator: Annotated[auth.OperatorRecord, Depends(authenticated)],
) -> auth.OperatorRecord:
    return require_administration(operator)


Operator = Annotated[auth.OperatorRecord, Depends(authenticated)]
Admin = Annotated[auth.OperatorRecord, Depends(administrator)]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the mid delivery id")]
