"""Routes that watch the mid server: the status page (/status) and the health check (/healthz).

Both are hidden from the OpenAPI document. /healthz is public (midsourcing.api
PUBLIC_PATHS) and answers 200 when the database does; /status needs an operator: one with
ADMINISTRATION sees its own accounts, one with MONITORING every account
(midsourcing.status collects and renders the page).
Touches: the mid schema (read only), this host's metrics endpoints (midsourcing.status).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from midsourcing import auth, status
from midsourcing.routers.deps import Conn, Operator, State, require_administration
from midsourcing.routers.errors import PROBLEMS

router = APIRouter(responses=PROBLEMS)


@router.get("/status", response_class=HTMLResponse, include_in_schema=False)
async def status_page(operator: Operator, conn: Conn, api: State) -> HTMLResponse:
    """The operator's accounts, binds, rates, queue and deliveries in progress (every
    operator's with MONITORING); refreshes itself."""
    if auth.MONITORING in operator.rights:
        data = await status.collect(conn, api.config, None)
    else:
        data = await status.collect(conn, api.config, require_administration(operator).login)
    return HTMLResponse(status.render(data, operator.login))


@router.get("/healthz", include_in_schema=False)
async def healthz(conn: Conn) -> dict[str, str]:
    await conn.execute("SELECT 1")
    return {"status": "ok"}
