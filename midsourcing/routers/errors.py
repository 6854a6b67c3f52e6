"""The mid API's errors: ApiError, the Problem answer, and the application's handlers.

Every answer other than 2xx has a `Problem` body ({error, message, errors}, plus `chunk`
for a push with refused numbers). `ApiError` carries one; `problem_response` turns it into
the answer, `refuse` also logs it ("request refused"), `database_unavailable` is the 503
of a database that cannot be reached or gives no connection in time (psycopg
OperationalError, the pool's PoolTimeout included). `install_handlers(app)` maps FastAPI's
and Starlette's exceptions (validation, unparsable bodies, 404/405) to Problems.
Touches: the log only.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from midsourcing.schemas import ChunkResult, Problem

log = structlog.get_logger("midsourcing.api")

CHALLENGE = {"WWW-Authenticate": 'Basic realm="smsmta mid", charset="UTF-8"'}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in (
        (401, "missing or wrong credentials"),
        (403, "the operator lacks the ADMINISTRATION right"),
        (422, "invalid request: each error names its place"),
        (429, "too many failed logins: wait Retry-After seconds"),
    )
}
"""The answers every operation of the document may give."""


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


def problem_response(exc: ApiError) -> JSONResponse:
    """The answer of `exc`."""
    body = Problem(error=exc.error, message=exc.message, errors=exc.errors, chunk=exc.chunk)
    content = body.model_dump()
    if exc.chunk is None:  # only a push with refused numbers says what its chunk did
        del content["chunk"]
    return JSONResponse(content, status_code=exc.status, headers=exc.headers)


def refuse(exc: ApiError, path: str) -> JSONResponse:
    """The answer of `exc`, logged as a refused request."""
    log.info("request refused", path=path, status=exc.status, error=exc.error, detail=exc.message)
    return problem_response(exc)


def database_unavailable(exc: psycopg.OperationalError, path: str) -> JSONResponse:
    """503: the database is unreachable, or no connection came in time."""
    log.warning("database unavailable", path=path, error=str(exc))
    return problem_response(
        ApiError(503, "database_unavailable", "the database is unavailable: retry later")
    )


def where(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A validation error's place as the client wrote it: `body.messages[42].to`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def unparsable_body(cause: BaseException) -> ApiError:
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


def invalid_request(exc: RequestValidationError) -> ApiError:
    """The 422 of a request FastAPI found invalid: each error says where."""
    errors: list[dict[str, object]] = []
    for item in exc.errors()[:100]:
        loc = list(item.get("loc", ()))
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        if item.get("type") == "json_invalid" and len(loc) == 2:
            reason = (item.get("ctx") or {}).get("error", "")
            message = f"not valid JSON at character {loc[1]}: {reason}"
            loc = ["body"]
        entry: dict[str, object] = {
            "where": where(loc),
            "message": message,
            "type": item.get("type", ""),
        }
        if len(loc) >= 3 and loc[:2] == ["body", "messages"] and isinstance(loc[2], int):
            entry["recipient_index"] = loc[2]
        errors.append(entry)
    first = errors[0] if errors else {"where": "request", "message": "invalid"}
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    message = f"{first['where']}: {first['message']}{more}"
    return ApiError(422, "invalid_request", message, errors=errors)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status >= 500 or exc.status in (401, 403, 429):
        return refuse(exc, request.url.path)
    return problem_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if isinstance(cause, ApiError):  # the body limit, hit while FastAPI read the body
        return problem_response(cause)
    if exc.status_code == 400 and cause is not None:
        return problem_response(unparsable_body(cause))
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem_response(
        ApiError(exc.status_code, error, str(exc.detail), dict(exc.headers or {}))
    )


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(invalid_request(exc))


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, psycopg.OperationalError)
    return database_unavailable(exc, request.url.path)


def install_handlers(app: FastAPI) -> None:
    """Answer every error of `app` with a Problem."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
