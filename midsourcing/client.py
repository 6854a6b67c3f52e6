"""The marketing side's client of the mid API (httpx), one per marketing external account.

It logs in once with the account's operator and password (HTTP Basic on POST
/api/v1/token) and then sends the bearer token, logging in again when the token expires;
the password goes over the wire only on login and is never logged. Every failure is a
`MidError` that says whether trying again can help (`retryable`: no answer, a timeout, a
5xx, a 429) or not (any other 4xx: wrong credentials, missing right, unknown account,
invalid request; a server certificate the account does not trust), and carries the mid
server's own explanation. A push whose rows with numbers the mid server cannot put in the
canonical form were refused (the rest of the chunk queued) raises `RejectedNumbers`, which
names each refused message. Touches: the network (the mid URL of the account), the
marketing metrics.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from midsourcing.schemas import (
    Chunk,
    ChunkResult,
    ConnectionResponse,
    DeliveryCreate,
    DeliveryInfo,
    Message,
    PreviewRequest,
    PreviewResponse,
    PushComplete,
    StatusPage,
)
from smsmta import __version__, obs
from smsmta.settings import MarketingAccount


class MidError(Exception):
    """A mid API call that failed; `retryable` says whether trying again may succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str = "",
        retryable: bool,
        problem: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.retryable = retryable
        self.problem = problem or {}  # the mid server's Problem body, when it sent one
        super().__init__(message)


class RejectedNumbers(MidError):
    """A push whose rows with numbers the mid server cannot canonicalise were refused; the
    rest of the chunk was queued (`result`). `refused` maps marketing message id -> why."""

    def __init__(self, message: str, problem: dict[str, Any]) -> None:
        super().__init__(
            message, status=422, error="rejected_numbers", retryable=False, problem=problem
        )
        self.refused: dict[int, str] = {
            int(entry["message_id"]): str(entry.get("reason") or entry.get("message", ""))
            for entry in problem.get("errors", [])
            if isinstance(entry, dict) and entry.get("message_id") is not None
        }
        self.result = ChunkResult.model_validate(problem["chunk"])


class MidClient:
    """Async client of one mid server for one marketing account; use `async with`."""

    def __init__(
        self, account: MarketingAccount, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.account = account
        verify: ssl.SSLContext | bool = account.verify_tls
        if account.ca_file is not None and account.verify_tls:
            verify = ssl.create_default_context(cafile=str(account.ca_file))
        self._http = httpx.AsyncClient(
            base_url=account.mid_url.rstrip("/"),
            timeout=httpx.Timeout(account.timeout, connect=min(account.timeout, 10.0)),
            verify=verify,
            headers={"User-Agent": f"smsmta-marketing/{__version__}"},
            transport=transport,
        )
        self._token: str | None = None

    async def __aenter__(self) -> MidClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing -----------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, endpoint: str, *, auth: Any = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, auth=auth, **kwargs)
        except httpx.TimeoutException as exc:
            obs.MKT_REQUESTS.labels(self.account.name, endpoint, "error").inc()
            raise MidError(
                f"{self.account.mid_url}: no answer within {self.account.timeout:g} s "
                f"({type(exc).__name__})",
                retryable=True,
            ) from None
        except httpx.ConnectError as exc:
            obs.MKT_REQUESTS.labels(self.account.name, endpoint, "error").inc()
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                trust = (
                    f"the CA in ca_file {self.account.ca_file}"
                    if self.account.ca_file
                    else "the system's CAs (set ca_file to the CA of its certificate)"
                )
                raise MidError(
                    f"{self.account.mid_url}: the mid server's TLS certificate is not trusted "
                    f"by {trust}: {exc}",
                    retryable=False,
                ) from None
            raise MidError(
                f"{self.account.mid_url}: cannot reach the mid server: {exc}", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            obs.MKT_REQUESTS.labels(self.account.name, endpoint, "error").inc()
            raise MidError(
                f"{self.account.mid_url}: cannot reach the mid server: {exc}", retryable=True
            ) from None
        obs.MKT_REQUESTS.labels(self.account.name, endpoint, str(response.status_code)).inc()
        if response.status_code in (401, 403, 429):
            obs.MKT_AUTH_FAILURES.labels(self.account.name, str(response.status_code)).inc()
        return response

    async def _login(self) -> str:
        password = self.account.password.get_secret_value() if self.account.password else ""
        response = await self._send(
            "POST",
            "/api/v1/token",
            "/api/v1/token",
            auth=httpx.BasicAuth(self.account.operator, password),
        )
        body = self._check(response)
        self._token = str(body["token"])
        return self._token

    def _check(self, response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        problem: Any = None
        try:
            problem = response.json()
            message = str(problem.get("message") or problem)
            error = str(problem.get("error", ""))
        except (ValueError, AttributeError):
            message, error = response.text[:500] or response.reason_phrase, ""
        status = response.status_code
        rejected = error == "rejected_numbers" and isinstance(problem, dict)
        if status == 422 and rejected and problem.get("chunk") is not None:
            raise RejectedNumbers(f"mid server answered {status}: {message}", problem)
        hint = {
            401: f" (operator {self.account.operator!r}: check the login and password)",
        }.get(status, "")
        raise MidError(
            f"mid server answered {status}: {message}{hint}",
            status=status,
            error=error,
            retryable=status >= 500 or status == 429,
            problem=problem if isinstance(problem, dict) else None,
        )

    async def _call(self, method: str, path: str, endpoint: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        token = self._token or await self._login()
        headers["Authorization"] = f"Bearer {token}"
        response = await self._send(method, path, endpoint, headers=headers, **kwargs)
        if response.status_code == 401:  # expired or revoked: log in again, once
            headers["Authorization"] = f"Bearer {await self._login()}"
            response = await self._send(method, path, endpoint, headers=headers, **kwargs)
        return self._check(response)

    # --- the API ------------------------------------------------------------------------

    async def test_connection(self) -> ConnectionResponse:
        body = await self._call("GET", "/api/v1/connection", "/api/v1/connection")
        return ConnectionResponse.model_validate(body)

    async def preview(self, request: PreviewRequest) -> PreviewResponse:
        body = await self._call(
            "POST", "/api/v1/preview", "/api/v1/preview", json=request.model_dump(mode="json")
        )
        return PreviewResponse.model_validate(body)

    async def create_delivery(self, request: DeliveryCreate) -> DeliveryInfo:
        body = await self._call(
            "POST", "/api/v1/deliveries", "/api/v1/deliveries", json=request.model_dump(mode="json")
        )
        return DeliveryInfo.model_validate(body)

    async def get_delivery(self, delivery_id: int) -> DeliveryInfo:
        body = await self._call(
            "GET", f"/api/v1/deliveries/{delivery_id}", "/api/v1/deliveries/{delivery_id}"
        )
        return DeliveryInfo.model_validate(body)

    async def push(self, delivery_id: int, messages: list[Message]) -> ChunkResult:
        """Push a chunk; RejectedNumbers when some rows were refused (the rest queued)."""
        chunk = Chunk.model_construct(messages=messages)
        body = await self._call(
            "POST",
            f"/api/v1/deliveries/{delivery_id}/messages",
            "/api/v1/deliveries/{delivery_id}/messages",
            content=chunk.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        return ChunkResult.model_validate(body)

    async def complete(self, delivery_id: int, total: int) -> DeliveryInfo:
        body = await self._call(
            "POST",
            f"/api/v1/deliveries/{delivery_id}/complete",
            "/api/v1/deliveries/{delivery_id}/complete",
            json=PushComplete(total=total).model_dump(),
        )
        return DeliveryInfo.model_validate(body)

    async def action(self, delivery_id: int, action: str) -> DeliveryInfo:
        if action not in ("pause", "resume", "cancel"):
            raise ValueError(action)
        body = await self._call(
            "POST",
            f"/api/v1/deliveries/{delivery_id}/{action}",
            f"/api/v1/deliveries/{{delivery_id}}/{action}",
        )
        return DeliveryInfo.model_validate(body)

    async def statuses(self, delivery_id: int, cursor: str, limit: int) -> StatusPage:
        body = await self._call(
            "GET",
            f"/api/v1/deliveries/{delivery_id}/statuses",
            "/api/v1/deliveries/{delivery_id}/statuses",
            params={"cursor": cursor, "limit": limit},
        )
        return StatusPage.model_validate(body)
