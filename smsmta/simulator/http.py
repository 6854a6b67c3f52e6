"""The simulator's control endpoint: a small HTTP/1.1 server on asyncio streams.

What it does: serves one `smsmta.simulator.Smsc` to test harnesses and operators.

- ``GET /stats``: the counters (`Smsc.stats`), as JSON.
- ``GET /recorded``: the binds and submits kept with `record_pdus` (oldest first).
- ``GET /config``: the fields that can change at run time, with their values.
- ``POST /config``: a JSON object of some of those fields (fail_rate, resp_delay_ms,
  max_tps, max_window, drop_after, dlr_delay_ms, submit_fail_rate, submit_fail_status,
  receipt_before_resp, answer_nothing); answers the new values.
- ``POST /mo``: ``{"source": "+336...", "destination": "38000", "text": "STOP",
  "data_coding": 8, "system_id": "..."}`` (destination, data_coding and system_id are
  optional): queues an MO for the receivers; answers ``{"parts": n}``.
- ``POST /drop_links`` (no body): aborts every connection now; answers ``{"dropped": n}``.
- ``POST /garbage``: ``{"kind": "bad_length", "binds": ["tx"]}`` (binds optional, default
  all): writes that garbage on every live bind of those types (`Smsc.inject_garbage`);
  answers ``{"written": n}``.

Contract: one request per connection (the answer says ``Connection: close``); every
answer is JSON. A request that cannot be read or understood (bad request line, header
block over 16 KiB, body over 1 MiB, chunked body, invalid JSON, a wrong field) gets 400
with ``{"error": "..."}``; an unknown path 404; a known path with another method 405. A
client that sends nothing for 10 seconds is disconnected. Errors inside a handler never
reach the event loop's exception handler.

Why hand-written: four routes on the simulator's own loop do not justify a web framework
in a test tool; uvicorn would bring its own loop management.

Touches: one listening TCP socket; the `Smsc` it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smsmta.simulator import Smsc

__all__ = ["start_control_server"]

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
READ_TIMEOUT = 10.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    500: "Internal Server Error",
}
_ALLOWED = {
    "/stats": ("GET",),
    "/recorded": ("GET",),
    "/config": ("GET", "POST"),
    "/mo": ("POST",),
    "/drop_links": ("POST",),
    "/garbage": ("POST",),
}


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def start_control_server(smsc: Smsc, host: str, port: int) -> asyncio.Server:
    """Listen on host:port and serve `smsc`'s control routes; return the asyncio server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(smsc, reader, writer)

    return await asyncio.start_server(handle, host, port, limit=MAX_HEADER_BYTES)


async def _serve_one(
    smsc: Smsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    headers: dict[str, str] = {}
    try:
        try:
            method, path, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            status, payload = _route(smsc, method, path, body)
            if status == 405:
                headers["Allow"] = ", ".join(_ALLOWED[path])
        except _HttpError as error:
            status, payload = error.status, {"error": str(error)}
        except TimeoutError:
            status, payload = 408, {"error": "request not received in time"}
        except Exception as error:  # a bug must not kill the endpoint
            status, payload = 500, {"error": f"{type(error).__name__}: {error}"}
        writer.write(_response(status, payload, headers))
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(400, f"header block over {MAX_HEADER_BYTES} bytes") from None
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            raise ConnectionResetError("client sent nothing") from None
        raise _HttpError(400, "incomplete request head") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, f"bad request line {lines[0][:80]!r}")
    method, target, _version = parts
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _HttpError(400, f"bad header line {line[:80]!r}")
        fields[name.strip().lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        raise _HttpError(400, "chunked bodies are not supported; send Content-Length")
    length_text = fields.get("content-length", "0")
    if not length_text.isdigit():
        raise _HttpError(400, f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise _HttpError(400, f"body over {MAX_BODY_BYTES} bytes")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise _HttpError(400, "body shorter than Content-Length") from None
    return method, target.split("?", 1)[0], body


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise _HttpError(400, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise _HttpError(400, "the body must be a JSON object")
    return value


def _route(smsc: Smsc, method: str, path: str, body: bytes) -> tuple[int, Any]:
    allowed = _ALLOWED.get(path)
    if allowed is None:
        raise _HttpError(
            404,
            f"no such path {path[:80]!r}; "
            "try /stats, /recorded, /config, /mo, /drop_links or /garbage",
        )
    if method not in allowed:
        return 405, {"error": f"{method} not allowed on {path}; use {', '.join(allowed)}"}
    if path == "/stats":
        return 200, smsc.stats
    if path == "/recorded":
        return 200, list(smsc.recorded)
    if path == "/config":
        if method == "GET":
            return 200, smsc.config.runtime()
        changes = _json_object(body)
        try:
            return 200, smsc.update_config(**changes)
        except (ValueError, TypeError) as error:
            raise _HttpError(400, str(error)) from None
    if path == "/drop_links":
        return 200, {"dropped": smsc.drop_links()}
    if path == "/garbage":
        request = _json_object(body)
        unknown = set(request) - {"kind", "binds"}
        if unknown:
            raise _HttpError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
        kind, binds = request.get("kind"), request.get("binds", ["tx", "rx", "trx"])
        if not isinstance(kind, str):
            raise _HttpError(400, "'kind' is required and must be a string")
        if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
            raise _HttpError(400, "'binds' must be a list of strings (tx, rx, trx)")
        try:
            return 200, {"written": smsc.inject_garbage(kind, tuple(binds))}
        except ValueError as error:
            raise _HttpError(400, str(error)) from None
    # POST /mo
    request = _json_object(body)
    unknown = set(request) - {"source", "destination", "text", "data_coding", "system_id"}
    if unknown:
        raise _HttpError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
    for name in ("source", "text"):
        if not isinstance(request.get(name), str):
            raise _HttpError(400, f"{name!r} is required and must be a string")
    try:
        parts = smsc.queue_mo(
            request["source"],
            request.get("destination"),
            request["text"],
            request.get("data_coding"),
            system_id=request.get("system_id"),
        )
    except ValueError as error:
        raise _HttpError(400, str(error)) from None
    return 200, {"parts": parts}


def _response(status: int, payload: Any, headers: dict[str, str]) -> bytes:
    body = json.dumps(payload, sort_keys=True).encode() + b"\n"
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
