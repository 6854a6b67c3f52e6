"""The mid HTTP API: FastAPI routes, operator authentication, errors and metrics.

`create_app(config, dsn)` builds the application; `smsmta mid` serves it with uvicorn
(midsourcing.server). Every route under /api/v1 needs an operator holding the
ADMINISTRATION right, authenticated either with HTTP Basic (login and password, checked
against the argon2 hash) or with a bearer token from `POST /api/v1/token`. Answers:
401 for missing or wrong credentials (the same answer whether the login exists or not),
429 with Retry-After while a login is slowed down after repeated failures, 403 for an
operator without the right, 404 for a delivery that is not this operator's, 409 for an
action the delivery's state forbids, 413 for a body over `mid.max_body_bytes`, 422 for a
request that is not valid (each error says where: `body.messages[42].to`) and for a push
chunk with numbers that cannot be put in the canonical form (`rejected_numbers`: those rows
alone are refused, the rest is queued), 503 when the database is unreachable or when
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
Touches: the mid schema through a small pool of psycopg connections, the log, metrics.
"""

import asyncio
import base64
import binascii
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
import structlog
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from midsourcing import auth, status, store
from midsourcing.preview import preview
from midsourcing.schemas import (
    Chunk,
    ChunkResult,
    ConnectionResponse,
    DeliveryCreate,
    DeliveryInfo,
    DeliveryState,
    OperatorInfo,
    PreviewRequest,
    PreviewResponse,
    Problem,
    PushComplete,
    RoutableAccount,
    StatusPage,
    TokenResponse,
)
from smsmta import __version__, obs
from smsmta.accounts import sync_accounts
from smsmta.numbers import NumberError, canonical
from smsmta.settings import Account, MidConfig

log = structlog.get_logger("midsourcing.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Pool:
    """A bounded set of autocommit psycopg connections (psycopg_pool is not a dependency).

    A connection that broke or was left inside a transaction is closed, not reused.
    """

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[psycopg.AsyncConnection] = deque()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if candidate.closed or candidate.broken:
                    continue
                conn = candidate
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            try:
                yield conn
            finally:
                idle = psycopg.pq.TransactionStatus.IDLE
                if not conn.closed and not conn.broken and conn.info.transaction_status == idle:
                    self._idle.append(conn)
                else:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def close(self) -> None:
        while self._idle:
            with contextlib.suppress(Exception):
                await self._idle.pop().close()


class ApiError(Exception):
    """An answer other than 2xx, with its Problem body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, object]] | None = None,
        chunk: ChunkResult | None = None,
    ) -> None:
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}
        self.errors = errors or []
        self.chunk = chunk
        super().__init__(message)


CHALLENGE = {"WWW-Authenticate": 'Basic realm="smsmta mid", charset="UTF-8"'}
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
"""Routes answered without credentials; every other route needs an ADMINISTRATION operator."""
OPERATOR_SCOPE_KEY = "smsmta.operator"
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in (
        (401, "missing or wrong credentials"),
        (403, "the operator lacks the ADMINISTRATION right"),
        (422, "invalid request: each error names its place"),
        (429, "too many failed logins: wait Retry-After seconds"),
    )
}


def _where(loc: tuple[int | str, ...] | list[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


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
                await _problem_response(
                    ApiError(413, "body_too_large", f"the request body is over {limit} bytes")
                )(scope, receive, send_wrapper)
            elif length > 0 and self.in_flight > 0 and self.in_flight + length > self.max_in_flight:
                await _problem_response(self._busy())(scope, receive, send_wrapper)
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
            log.info(
                "request refused",
                path=scope.get("path", ""),
                status=refused.status,
                error=refused.error,
                detail=refused.message,
            )
            await _problem_response(refused)(scope, receive, send)
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


def _unparsable_body(cause: BaseException) -> ApiError:
    """The 400 of a body FastAPI could not parse, saying why."""
    if isinstance(cause, RecursionError):
        reason = "the JSON is nested too deeply"
    elif isinstance(cause, UnicodeDecodeError):
        reason = f"not valid UTF-8 at byte {cause.start}"
    else:
        reason = f"cannot be parsed ({type(cause).__name__})"
    return ApiError(
        400, "invalid_body", f"body: {reason}", errors=[{"where": "body", "message": reason}]
    )


def canonical_rows(
    chunk: Chunk, default_country: str
) -> tuple[list[tuple[int, str, str]], list[dict[str, object]]]:
    """(rows to queue with their number in the canonical form, the rows refused).

    Each refusal names the row (`recipient_index`, the marketing `message_id`) and why;
    the canonical form (`+` and at most 15 digits) always fits SMPP's destination_addr.
    """
    rows: list[tuple[int, str, str]] = []
    refused: list[dict[str, object]] = []
    for index, message in enumerate(chunk.messages):
        try:
            to = canonical(message.to, default_country=default_country)
        except NumberError as exc:
            refused.append(
                {
                    "where": f"body.messages[{index}].to",
                    "message": f"{message.to!r} is not a mobile number: {exc}",
                    "reason": str(exc),
                    "type": "invalid_number",
                    "recipient_index": index,
                    "message_id": message.id,
                }
            )
            continue
        rows.append((message.id, to, message.text))
    return rows, refused


def _problem_response(exc: ApiError) -> JSONResponse:
    body = Problem(error=exc.error, message=exc.message, errors=exc.errors, chunk=exc.chunk)
    content = body.model_dump()
    if exc.chunk is None:  # only a push with refused numbers says what its chunk did
        del content["chunk"]
    return JSONResponse(content, status_code=exc.status, headers=exc.headers)


def create_app(config: MidConfig, dsn: str) -> FastAPI:
    """The mid API application for one settings file and one database."""
    service = config.mid
    pool = Pool(dsn, service.db_pool_size)
    passwords = auth.Authenticator(
        pool.connection,
        workers=service.password_check_workers,
        queue=service.password_check_queue,
        attempts_per_second=service.login_attempts_per_second,
        attempts_burst=service.login_attempts_burst,
        clients_tracked=service.login_clients_tracked,
        free_failures=service.login_free_failures,
        max_delay=service.login_max_delay,
        base_delay=service.login_base_delay,
    )
    accounts: dict[str, Account] = {account.name: account for account in config.accounts}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with pool.connection() as conn:
            await sync_accounts(conn, config)
        lag_task = asyncio.create_task(measure_sync_lag())
        log.info("mid API ready", accounts=sorted(accounts))
        try:
            yield
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            await pool.close()
            passwords.close()

    async def measure_sync_lag() -> None:
        while True:
            try:
                async with pool.connection() as conn:
                    obs.MID_SYNC_LAG.set(await store.sync_lag(conn))
            except psycopg.Error as exc:
                log.warning("sync lag not measured", error=str(exc))
            await asyncio.sleep(service.sync_lag_period)

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

    # --- errors -----------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.status >= 500 or exc.status in (401, 403, 429):
            log.info(
                "request refused",
                path=request.url.path,
                status=exc.status,
                error=exc.error,
                detail=exc.message,
            )
        return _problem_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, ApiError):  # the body limit, hit while FastAPI read the body
            return _problem_response(cause)
        if exc.status_code == 400 and cause is not None:
            return _problem_response(_unparsable_body(cause))
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _problem_response(
            ApiError(exc.status_code, error, str(exc.detail), dict(exc.headers or {}))
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, object]] = []
        for item in exc.errors()[:100]:
            loc = list(item.get("loc", ()))
            message = str(item.get("msg", "")).removeprefix("Value error, ")
            if item.get("type") == "json_invalid" and len(loc) == 2:
                reason = (item.get("ctx") or {}).get("error", "")
                message = f"not valid JSON at character {loc[1]}: {reason}"
                loc = ["body"]
            entry: dict[str, object] = {
                "where": _where(loc),
                "message": message,
                "type": item.get("type", ""),
            }
            if len(loc) >= 3 and loc[:2] == ["body", "messages"] and isinstance(loc[2], int):
                entry["recipient_index"] = loc[2]
            errors.append(entry)
        first = errors[0] if errors else {"where": "request", "message": "invalid"}
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        message = f"{first['where']}: {first['message']}{more}"
        return _problem_response(ApiError(422, "invalid_request", message, errors=errors))

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable", path=request.url.path, error=str(exc))
        return _problem_response(
            ApiError(503, "database_unavailable", "the database is unavailable: retry later")
        )

    # --- dependencies ---------------------------------------------------------------------

    basic_scheme = HTTPBasic(auto_error=False, description="operator login and password")
    bearer_scheme = HTTPBearer(auto_error=False, description="token from POST /api/v1/token")

    async def connection() -> AsyncIterator[psycopg.AsyncConnection]:
        async with pool.connection() as conn:
            yield conn

    Conn = Annotated[psycopg.AsyncConnection, Depends(connection)]

    async def authenticate(header: str, client: str | None) -> auth.OperatorRecord:
        """The operator an Authorization header names; ApiError 401, 429 or 503 otherwise.

        A database connection is held only for each short query, never during argon2."""
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and value:
            async with pool.connection() as conn:
                operator = await auth.authenticate_token(conn, value, service.token_max_lifetime)
            if operator is None:
                obs.MID_AUTH_FAILURES.labels("bad_token").inc()
                raise ApiError(401, "unauthorized", "invalid or expired token", CHALLENGE)
            return operator
        if scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            login, colon, password = decoded.partition(":")
            if not colon:
                obs.MID_AUTH_FAILURES.labels("bad_credentials").inc()
                raise ApiError(401, "unauthorized", "malformed Basic credentials", CHALLENGE)
            try:
                operator = await passwords.password(login, password, client)
            except auth.Throttled as exc:
                obs.MID_AUTH_FAILURES.labels("throttled").inc()
                raise ApiError(
                    429,
                    "too_many_failures",
                    str(exc),
                    {"Retry-After": str(int(exc.retry_after + 0.999))},
                ) from None
            except auth.Busy as exc:
                obs.MID_AUTH_FAILURES.labels("busy").inc()
                raise ApiError(
                    503, "busy", str(exc), {"Retry-After": str(int(exc.retry_after + 0.999))}
                ) from None
            if operator is None:
                obs.MID_AUTH_FAILURES.labels("bad_credentials").inc()
                raise ApiError(401, "unauthorized", "wrong login or password", CHALLENGE)
            return operator
        obs.MID_AUTH_FAILURES.labels("missing").inc()
        raise ApiError(
            401, "unauthorized", "authenticate with HTTP Basic or a bearer token", CHALLENGE
        )

    def require_administration(operator: auth.OperatorRecord) -> auth.OperatorRecord:
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
        _basic: Annotated[Any, Depends(basic_scheme)] = None,
        _bearer: Annotated[Any, Depends(bearer_scheme)] = None,
    ) -> auth.OperatorRecord:
        known = request.scope.get(OPERATOR_SCOPE_KEY)
        if isinstance(known, auth.OperatorRecord):  # the gate authenticated the request
            return known
        client = request.client.host if request.client else None
        return await authenticate(request.headers.get("authorization", ""), client)

    async def administrator(
        operator: Annotated[auth.OperatorRecord, Depends(authenticated)],
    ) -> auth.OperatorRecord:
        return require_administration(operator)

    class Gate:
        """ASGI middleware: authenticate and authorize before the route reads anything.

        Every route but PUBLIC_PATHS is gated, so a new route is protected by default.
        """

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            route = _route(scope) if scope["type"] == "http" else None
            if route is None or getattr(route, "path", None) in PUBLIC_PATHS:
                await self.app(scope, receive, send)
                return
            try:
                client = scope.get("client")
                operator = await authenticate(
                    Headers(scope=scope).get("authorization", ""), client[0] if client else None
                )
                # MONITORING opens the status page alone (every account's, read only)
                path = getattr(route, "path", None)
                if not (path == "/status" and auth.MONITORING in operator.rights):
                    require_administration(operator)
                scope[OPERATOR_SCOPE_KEY] = operator
            except ApiError as exc:
                scope["route"] = route  # the metrics' label: the route template
                log.info(
                    "request refused",
                    path=scope.get("path", ""),
                    status=exc.status,
                    error=exc.error,
                    detail=exc.message,
                )
                await _problem_response(exc)(scope, receive, send)
                return
            except psycopg.OperationalError as exc:
                scope["route"] = route
                log.warning("database unavailable", path=scope.get("path", ""), error=str(exc))
                await _problem_response(
                    ApiError(
                        503, "database_unavailable", "the database is unavailable: retry later"
                    )
                )(scope, receive, send)
                return
            await self.app(scope, receive, send)

    def _route(scope: Scope) -> Any:
        partial = None
        for route in app.router.routes:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                return route
            if match == Match.PARTIAL and partial is None:
                partial = route
        return partial

    Admin = Annotated[auth.OperatorRecord, Depends(administrator)]
    DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the mid delivery id")]

    def routable(operator: auth.OperatorRecord) -> list[Account]:
        return [a for a in config.accounts if a.operator == operator.login and a.enabled]

    def resolve(operator: auth.OperatorRecord, marketing_account: str) -> Account:
        expected = f"{operator.login}_{marketing_account}"
        account = accounts.get(expected)
        if account is None or not account.enabled or account.operator != operator.login:
            # another operator's account is reported as missing: nothing tells it exists
            mine = account is not None and account.operator == operator.login
            state = "is disabled" if mine else "does not exist"
            raise ApiError(
                422,
                "unknown_account",
                f"no enabled mid account {expected!r}: operator {operator.login!r} with "
                f"marketing account {marketing_account!r} routes to the mid external account "
                f"named {expected!r}, which {state} on this mid server",
                errors=[{"where": "body.marketing_account", "expected_account": expected}],
            )
        return account

    async def delivery_info(conn: psycopg.AsyncConnection, row: store.DeliveryRow) -> DeliveryInfo:
        return DeliveryInfo(
            id=row.id,
            account=row.account,
            marketing_delivery_id=row.marketing_delivery_id,
            label=row.label,
            state=DeliveryState(row.state),
            options=row.options,
            push_complete=row.push_complete,
            counters=await store.counters(conn, row.id),
        )

    def not_found(delivery_id: int) -> ApiError:
        return ApiError(404, "not_found", f"no delivery {delivery_id} for this operator")

    # --- routes ---------------------------------------------------------------------------

    @app.get("/status", response_class=HTMLResponse, include_in_schema=False)
    async def status_page(
        operator: Annotated[auth.OperatorRecord, Depends(authenticated)], conn: Conn
    ) -> HTMLResponse:
        """The operator's accounts, binds, rates, queue and deliveries in progress (every
        operator's with MONITORING); refreshes itself."""
        if auth.MONITORING in operator.rights:
            data = await status.collect(conn, config, None)
        else:
            data = await status.collect(conn, config, require_administration(operator).login)
        return HTMLResponse(status.render(data, operator.login))

    @app.get("/healthz", include_in_schema=False)
    async def healthz(conn: Conn) -> dict[str, str]:
        await conn.execute("SELECT 1")
        return {"status": "ok"}

    @app.post("/api/v1/token", response_model=TokenResponse, tags=["authentication"])
    async def token(operator: Admin, conn: Conn, request: Request) -> TokenResponse:
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
            conn, operator, service.token_ttl, service.token_max_lifetime
        )
        return TokenResponse(token=value, expires_at=expires_at)

    @app.get("/api/v1/connection", response_model=ConnectionResponse, tags=["authentication"])
    async def test_connection(operator: Admin, conn: Conn) -> ConnectionResponse:
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
                for a in routable(operator)
            ],
            server_time=now,
        )

    @app.post("/api/v1/preview", response_model=PreviewResponse, tags=["deliveries"])
    async def preview_texts(request: PreviewRequest, operator: Admin) -> PreviewResponse:
        """What the phone gets: encoding, parts, transliteration and sender, per text."""
        account = resolve(operator, request.marketing_account)
        return preview(account, request.options, request.texts)

    @app.post(
        "/api/v1/deliveries",
        response_model=DeliveryInfo,
        status_code=201,
        tags=["deliveries"],
        responses={200: {"model": DeliveryInfo, "description": "the delivery existed already"}},
    )
    async def create_delivery(request: DeliveryCreate, operator: Admin, conn: Conn) -> JSONResponse:
        """Create a delivery (idempotent on marketing account + marketing delivery id)."""
        account = resolve(operator, request.marketing_account)
        account_id = await store.account_id(conn, account.name)
        if account_id is None:  # in the file but not synced: sync now
            account_id = (await sync_accounts(conn, config))[account.name]
        row, created = await store.create(conn, account_id, operator.login, request)
        info = await delivery_info(conn, row)
        if created:
            log.info("delivery created", delivery=row.id, account=account.name)
        return JSONResponse(info.model_dump(mode="json"), status_code=201 if created else 200)

    @app.get("/api/v1/deliveries/{delivery_id}", response_model=DeliveryInfo, tags=["deliveries"])
    async def get_delivery(delivery_id: DeliveryId, operator: Admin, conn: Conn) -> DeliveryInfo:
        row = await store.get_delivery(conn, delivery_id, operator.login)
        if row is None:
            raise not_found(delivery_id)
        return await delivery_info(conn, row)

    @app.post(
        "/api/v1/deliveries/{delivery_id}/messages",
        response_model=ChunkResult,
        tags=["deliveries"],
    )
    async def push_messages(
        delivery_id: DeliveryId, chunk: Chunk, operator: Admin, conn: Conn
    ) -> ChunkResult:
        """Queue a chunk of up to 10,000 messages; a message already queued is skipped.

        Each number is put in its canonical form (E.164, national numbers read with the
        account's default_country). A row whose number cannot be is refused alone: the
        rest of the chunk is queued and the answer is 422 `rejected_numbers`, naming each
        refused row (index, marketing message id, why), with the `chunk` counts of the
        rest. Pushed again, the chunk gives the same answer and queues nothing twice.
        """
        row = await store.get_delivery(conn, delivery_id, operator.login)
        if row is None:
            raise not_found(delivery_id)
        account = accounts.get(row.account)
        rows, refused = canonical_rows(chunk, account.default_country if account else "")
        try:
            result = await store.push_chunk(conn, delivery_id, operator.login, rows)
        except store.Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        if result is None:
            raise not_found(delivery_id)
        received, inserted, total, account = result
        obs.MID_PUSHED_CHUNKS.labels(account).inc()
        obs.MID_PUSHED_MESSAGES.labels(account, "inserted").inc(inserted)
        obs.MID_PUSHED_MESSAGES.labels(account, "duplicate").inc(received - inserted)
        obs.MID_PUSHED_MESSAGES.labels(account, "refused").inc(len(refused))
        log.info(
            "chunk queued",
            delivery=delivery_id,
            received=received,
            inserted=inserted,
            total=total,
            refused=len(refused),
        )
        result = ChunkResult(
            received=received, inserted=inserted, duplicates=received - inserted, total=total
        )
        if refused:
            first = refused[0]
            raise ApiError(
                422,
                "rejected_numbers",
                f"{first['where']}: {first['message']}"
                + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")
                + f"; the other {received} messages of the chunk are queued",
                errors=refused,
                chunk=result,
            )
        return result

    @app.post(
        "/api/v1/deliveries/{delivery_id}/complete",
        response_model=DeliveryInfo,
        tags=["deliveries"],
    )
    async def complete(
        delivery_id: DeliveryId, body: PushComplete, operator: Admin, conn: Conn
    ) -> DeliveryInfo:
        """Declare every chunk pushed; refused (409) when the queue does not hold `total`."""
        try:
            row = await store.complete_push(conn, delivery_id, operator.login, body.total)
        except store.Conflict as exc:
            raise ApiError(409, "incomplete_push", str(exc)) from None
        if row is None:
            raise not_found(delivery_id)
        return await delivery_info(conn, row)

    def state_route(action: str, doc: str) -> None:
        async def change(delivery_id: DeliveryId, operator: Admin, conn: Conn) -> DeliveryInfo:
            try:
                row = await store.change_state(conn, delivery_id, operator.login, action)
            except store.Conflict as exc:
                raise ApiError(409, "conflict", str(exc)) from None
            if row is None:
                raise not_found(delivery_id)
            log.info("delivery state changed", delivery=delivery_id, action=action)
            return await delivery_info(conn, row)

        change.__doc__ = doc
        app.post(
            f"/api/v1/deliveries/{{delivery_id}}/{action}",
            response_model=DeliveryInfo,
            tags=["deliveries"],
            name=f"{action}_delivery",
        )(change)

    state_route("pause", "Pause: messages not claimed yet wait; claimed ones finish.")
    state_route("resume", "Resume a paused delivery.")
    state_route("cancel", "Cancel: messages not claimed yet end as cancelled.")

    @app.get(
        "/api/v1/deliveries/{delivery_id}/statuses",
        response_model=StatusPage,
        tags=["deliveries"],
    )
    async def statuses(
        delivery_id: DeliveryId,
        operator: Admin,
        conn: Conn,
        cursor: Annotated[str, Query(max_length=64, description="'' the first time")] = "",
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> StatusPage:
        """Per-message status changes after `cursor`, one page, and the counters."""
        row = await store.get_delivery(conn, delivery_id, operator.login)
        if row is None:
            raise not_found(delivery_id)
        try:
            pulled = await store.pull(conn, row, cursor, min(limit, service.pull_page_max))
        except store.BadCursor as exc:
            raise ApiError(
                422, "invalid_request", f"query.cursor: {exc}", errors=[{"where": "query.cursor"}]
            ) from None
        return StatusPage(
            delivery_id=row.id,
            state=pulled.state,
            changes=pulled.changes,
            cursor=pulled.cursor,
            more=pulled.more,
            lag_seconds=pulled.lag_seconds,
            counters=pulled.counters,
        )

    app.add_middleware(Gate)
    app.add_middleware(CrossSite, allowed_origins=service.allowed_origins)
    app.add_middleware(
        Metrics,
        max_body_bytes=service.max_body_bytes,
        max_body_bytes_in_flight=service.max_body_bytes_in_flight,
    )
    return app
