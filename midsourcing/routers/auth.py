"""Routes of authentication: a bearer token for a password, and the connection test.

`POST /api/v1/token` exchanges HTTP Basic credentials for a token (a token cannot renew
itself); `GET /api/v1/connection` says who the caller is, its rights and the accounts it
may route to. Both need the ADMINISTRATION right (checked by the API's gate first).
Touches: the mid schema (operator tokens) through the pool; metrics.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from midsourcing import auth
from midsourcing.routers.deps import Admin, Conn, State
from midsourcing.routers.errors import CHALLENGE, PROBLEMS, ApiError
from midsourcing.schemas import ConnectionResponse, OperatorInfo, RoutableAccount, TokenResponse
from smsmta import obs

router = APIRouter(tags=["authentication"], responses=PROBLEMS)


@router.post("/api/v1/token", response_model=TokenResponse)
async def token(operator: Admin, conn: Conn, request: Request, api: State) -> TokenResponse:
    """Exchange login and password (HTTP Basic) for a bearer token.

    A token cannot renew itself: the password is asked again, and every token dies
    `token_max_lifetime` after its issue at the latest."""
    if request.headers.get("authorization", "").partition(" ")[0].lower() != "basic":
        obs.MID_AUTH_FAILURES.labels("token_renewal").inc()
        raise ApiError(
            401,
            "unauthorized",
            "a token is given for the login and password (HTTP Basic), not for a token",
            CHALLENGE,
        )
    value, expires_at = await auth.issue_token(
        conn, operator, api.service.token_ttl, api.service.token_max_lifetime
    )
    return TokenResponse(token=value, expires_at=expires_at)


@router.get("/api/v1/connection", response_model=ConnectionResponse)
async def test_connection(operator: Admin, conn: Conn, api: State) -> ConnectionResponse:
    """Test connection: the operator, its rights and the mid accounts it may route to."""
    cursor = await conn.execute("SELECT now()")
    now = (await cursor.fetchone() or (None,))[0]
    return ConnectionResponse(
        operator=OperatorInfo(
            login=operator.login, label=operator.label, rights=list(operator.rights)
        ),
        accounts=[
            RoutableAccount(
                name=a.name,
                marketing_account=a.marketing_account or a.name[len(a.operator) + 1 :],
                label=a.label,
            )
            for a in api.config.accounts
            if a.operator == operator.login and a.enabled
        ],
        server_time=now,
    )
