"""The mid HTTP API: the application, its ASGI middleware, and its lifespan.

`create_app(config, dsn)` builds the application; `smsmta mid` serves it with uvicorn
(midsourcing.server). The routes are APIRouters in midsourcing.routers: `status` (/status,
/healthz), `auth` (/api/v1/token, /api/v1/connection) and `deliveries` (the rest of
/api/v1); what they share (the application's state at `app.state.mid`, the database
connection, the authenticated operator, the Problem errors) is in routers.deps and
routers.errors. Every route under /api/v1 needs an operator holding the ADMINISTRATION
right, authenticated either with HTTP Basic (login and password, checked against the
argon2 hash) or with a bearer token from `POST /api/v1/token`. Answers: 401 for missing
or wrong credentials (the same answer whether the login exists or not), 429 with
Retry-After while a login is slowed down after repeated failures, 403 for an operator
without the right, 404 for a delivery that is not this operator's, 409 for an action the
delivery's state forbids, 413 for a body over `mid.max_body_bytes`, 422 for a request
that is not valid (each error says where: `body.messages[42].to`) and for a push chunk
with numbers that cannot be put in the canonical form (`rejected_numbers`: those rows
alone are refused, the rest is queued), 503 when the database is unreachable or gives no
connection within midsourcing.db_pool.WAIT_SECONDS, or when
`mid.max_body_bytes_in_flight` bytes of bodies are already being handled (Retry-After).
State-changing requests take `application/json` only (415 otherwise) and refuse an
`Origin` other than the API's own (403): see CrossSite. Every error body is a `Problem`
({error, message, errors}). /docs and /redoc (CDN scripts) are off unless `mid.docs`.

Authentication fails closed: an ASGI gate in front of the application authenticates
every request to a route that is not in `PUBLIC_PATHS` (health, OpenAPI document, docs)
and checks the ADMINISTRATION right before anything else runs, the body is not even
read, so a route added later is protected without anyone remembering to, and a caller
without credentials learns nothing from the body's validation (401 before any 422).

Metrics: requests by route template, method and status; durations; authentication
failures by reason; pushed chunks and messages; the status sync lag. Logs: one JSON line
per refused or failed request and per chunk, never a password or an Authorization header.
Touches: the mid schema through a psycopg_pool pool (midsourcing.db_pool), the log,
metrics.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.routing import Match, Router

from midsourcing import auth, store
from midsourcing.db_pool import new_pool
from midsourcing.routers import auth as auth_routes
from midsourcing.routers import deliveries, status
from midsourcing.routers.deps import (
    OPERATOR_SCOPE_KEY,
    MidApi,
    authenticate,
    require_administration,
)
from midsourcing.routers.errors import (
    PROBLEMS,
    ApiError,
    database_unavailable,
    install_handlers,
    problem_response,
    refuse,
)
from smsmta import __version__, obs
from smsmta.accounts import sync_accounts
from smsmta.settings import MidConfig

log = structlog.get_logger("midsourcing.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
"""Routes answered without credentials; every other route needs an ADMINISTRATION operator."""


class Metrics:
    """ASGI middleware: body limits, and requests counted by route template.

    A body over `max_body_bytes` gets 413. Bodies being received or handled are counted
    in bytes (announced by Content-Length, else as they arrive): a request that would take
    them over `max_body_bytes_in_flight` gets 503 with Retry-After at once, unless it is
    alone, so that concurrent big pushes cannot add up in memory. The metric's labels
    come from fixed sets (route template or 'unmatched', obs.mid_method_label, status).
    """

    def __init__(self, app: Any, max_body_bytes: int, max_body_bytes_in_flight: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_body_bytes_in_flight
        self.in_flight = 0  # one event loop: no lock needed

    def _busy(self) -> ApiError:
        return ApiError(
            503,
            "busy",
            f"over {self.max_in_flight} bytes of request bodies are being handled: retry later",
            {"Retry-After": "1"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        limit = self.max_body_bytes

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            length = int(declared) if declared is not None else 0
        except ValueError:
            length = 0
        reserved = {"bytes": 0}
        try:
            if length > limit:
                await problem_response(
                    ApiError(413, "body_too_large", f"the request body is over {limit} bytes")
                )(scope, receive, send_wrapper)
            elif length > 0 and self.in_flight > 0 and self.in_flight + length > self.max_in_flight:
                await problem_response(self._busy())(scope, receive, send_wrapper)
            else:
                reserved["bytes"] = max(length, 0)
                self.in_flight += reserved["bytes"]
                received = {"bytes": 0}

                async def receive_limited() -> Message:
                    message = await receive()
                    if message["type"] == "http.request":
                        received["bytes"] += len(message.get("body", b""))
                        if received["bytes"] > limit:
                            raise ApiError(
                                413, "body_too_large", f"the request body is over {limit} bytes"
                            )
                        extra = received["bytes"] - reserved["bytes"]
                        if extra > 0:  # no length announced (chunked), or a lie
                            if self.in_flight > reserved["bytes"] and (
                                self.in_flight + extra > self.max_in_flight
                            ):
                                raise self._busy()
                            reserved["bytes"] += extra
                            self.in_flight += extra
                    return message

                await self.app(scope, receive_limited, send_wrapper)
        finally:
            self.in_flight -= reserved["bytes"]
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        method = obs.mid_method_label(scope.get("method", ""))
        obs.MID_REQUESTS.labels(endpoint, method, str(status["code"])).inc()
        obs.MID_REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that may change state: JSON bodies only, and no foreign Origin."""


class CrossSite:
    """ASGI middleware: a web page cannot make a browser change state through the API.

    A state-changing request (UNSAFE_METHODS) with an `Origin` other than the API's own
    (the Host it was sent to) or one of `allowed_origins` gets 403 `foreign_origin`; one
    with a body, or a Content-Type, that is not `application/json` gets 415
    `unsupported_media_type` (an HTML form can only send form-encoded, multipart or
    text/plain bodies, without asking the API first). Both before authentication, so
    that nothing of the request is read. Clients outside a browser send no Origin.
    """

    def __init__(self, app: Any, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refused = self._refusal(headers)
        if refused is not None:
            await refuse(refused, scope.get("path", ""))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, headers: Headers) -> ApiError | None:
        origin = headers.get("origin")
        if origin is not None:
            wanted = origin.strip().rstrip("/").lower()
            host = headers.get("host", "").strip().lower()
            _scheme, sep, netloc = wanted.partition("://")
            if wanted not in self.allowed and not (sep and host and netloc == host):
                return ApiError(
                    403,
                    "foreign_origin",
                    f"Origin {origin[:100]!r} may not change anything here: state-changing "
                    "requests come from the API's own origin or mid.allowed_origins",
                )
        content_type = headers.get("content-type")
        has_body = headers.get("content-length", "0").strip() not in ("", "0") or (
            "transfer-encoding" in headers
        )
        if content_type is None and not has_body:
            return None
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type {(content_type or '(none)')[:100]!r}: state-changing requests "
                "take application/json only",
                errors=[{"where": "header.content-type", "message": "not application/json"}],
            )
        return None


class Gate:
    """ASGI middleware: authenticate and authorize before the route reads anything.

    Every route but PUBLIC_PATHS is gated, so a new route is protected by default.
    """

    def __init__(self, app: Any, api: MidApi, router: Router) -> None:
        self.app = app
        self.api = api
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope) if scope["type"] == "http" else None
        if route is None or getattr(route, "path", None) in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            client = scope.get("client")
            operator = await authenticate(
                self.api,
                Headers(scope=scope).get("authorization", ""),
                client[0] if client else None,
            )
            # MONITORING opens the status page alone (every account's, read only)
            path = getattr(route, "path", None)
            if not (path == "/status" and auth.MONITORING in operator.rights):
                require_administration(operator)
            scope[OPERATOR_SCOPE_KEY] = operator
        except ApiError as exc:
            scope["route"] = route  # the metrics' label: the route template
            await refuse(exc, scope.get("path", ""))(scope, receive, send)
            return
        except psycopg.OperationalError as exc:  # the pool's PoolTimeout included
            scope["route"] = route
            await database_unavailable(exc, scope.get("path", ""))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _route(self, scope: Scope) -> Any:
        partial = None
        for route in self.router.routes:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                return route
            if match == Match.PARTIAL and partial is None:
                partial = route
        return partial


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pool, sync the accounts, measure the sync lag; close everything at the end."""
    api: MidApi = app.state.mid
    api.pool = new_pool(api.dsn, api.service.db_pool_size)
    try:
        await api.pool.open()
        # a connection of its own: an unreachable database fails the start at once, with
        # libpq's reason, instead of after the pool's wait
        async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as conn:
            await sync_accounts(conn, api.config)
        lag_task = asyncio.create_task(measure_sync_lag(api))
        log.info("mid API ready", accounts=sorted(api.accounts))
        try:
            yield
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
    finally:
        await api.pool.close()
        api.passwords.close()


async def measure_sync_lag(api: MidApi) -> None:
    while True:
        try:
            async with api.connection() as conn:
                obs.MID_SYNC_LAG.set(await store.sync_lag(conn))
        except psycopg.Error as exc:
            log.warning("sync lag not measured", error=str(exc))
        await asyncio.sleep(api.service.sync_lag_period)


ROUTERS = (status.router, auth_routes.router, deliveries.router)
"""The API's routes, in the order they are matched."""


def create_app(config: MidConfig, dsn: str) -> FastAPI:
    """The mid API application for one settings file and one database."""
    service = config.mid
    api = MidApi(config, dsn)
    app = FastAPI(
        title="smsmta mid API",
        version=__version__,
        description=(
            "Midsourcing API of the smsmta mid server: the marketing side pushes deliveries "
            "and pulls per-message statuses. Authenticate with HTTP Basic (operator login "
            "and password) or a bearer token from POST /api/v1/token; the operator needs "
            "the ADMINISTRATION right."
        ),
        lifespan=lifespan,
        responses=PROBLEMS,
        # Swagger UI and ReDoc load their scripts from a public CDN: off unless mid.docs
        docs_url="/docs" if service.docs else None,
        redoc_url="/redoc" if service.docs else None,
    )
    app.state.mid = api
    install_handlers(app)
    for router in ROUTERS:
        # the routes join the app's own table, not through include_router: since FastAPI
        # 0.137 an included router is one lazy node of app.routes, without a path, and
        # the gate (like tests/security's walk of every route) reads each route there
        app.router.routes.extend(router.routes)
    app.add_middleware(Gate, api=api, router=app.router)
    app.add_middleware(CrossSite, allowed_origins=service.allowed_origins)
    app.add_middleware(
        Metrics,
        max_body_bytes=service.max_body_bytes,
        max_body_bytes_in_flight=service.max_body_bytes_in_flight,
    )
    return app
