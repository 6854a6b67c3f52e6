"""Issue 14: slow clients cannot hold the mid API.

A mid API with a 1 s header timeout, a 1 s body timeout and at most 6 concurrent
connections: a connection that sends half its headers, or half its body, is closed
after the timeout; past the cap, a new connection evicts the one that has waited
longest for its headers, so half-sent requests cannot lock a client out; when every
connection is busy sending a body, the next request gets 503 at once (not a stall);
once they are closed, the API answers again.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import URL

from tests.security.conftest import MidServer, start_server, stop_server


@pytest.fixture(scope="module")
def slow_mid(
    security_db: URL, operators: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MidServer]:
    server, mid = start_server(
        security_db,
        Path(tmp_path_factory.mktemp("slow")),
        header_timeout=1,
        body_timeout=1,
        max_connections=6,
    )
    try:
        yield mid
    finally:
        stop_server(server)


def _port(mid: MidServer) -> int:
    return int(mid.url.rsplit(":", 1)[1])


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection (EOF or reset); None if it did not."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.timeout(30)
def test_half_sent_headers_are_closed_after_the_header_timeout(slow_mid: MidServer) -> None:
    with socket.create_connection(("127.0.0.1", _port(slow_mid)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        waited = _closed_within(sock, 5)
    assert waited is not None, "the half-sent request was still open after 5 s"
    assert waited < 3


@pytest.mark.timeout(30)
def test_half_sent_bodies_are_closed_after_the_body_timeout(slow_mid: MidServer) -> None:
    with socket.create_connection(("127.0.0.1", _port(slow_mid)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/preview HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b'\r\nContent-Length: 1000\r\n\r\n{"texts": '
        )
        waited = _closed_within(sock, 5)
    assert waited is not None, "the half-sent body was still open after 5 s"
    assert waited < 3


@pytest.mark.timeout(30)
def test_half_sent_headers_cannot_lock_clients_out(slow_mid: MidServer) -> None:
    """Past the cap, the connection waiting longest for its headers is closed."""
    port = _port(slow_mid)
    with contextlib.ExitStack() as stack:
        slow = []
        for _ in range(10):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)
        time.sleep(0.2)
        started = time.monotonic()
        with httpx.Client(base_url=slow_mid.url, timeout=5) as client:
            answer = client.get("/healthz")
        assert answer.status_code == 200, answer.status_code
        assert time.monotonic() - started < 1
        assert _closed_within(slow[0], 0.5) is not None  # the oldest were evicted
        assert _closed_within(slow[-1], 0.2) is None  # the youngest still wait


@pytest.mark.timeout(30)
def test_full_connections_answer_503_at_once_then_recover(slow_mid: MidServer) -> None:
    """Every connection busy sending a body (none to evict): 503 at once, not a stall."""
    port = _port(slow_mid)
    with contextlib.ExitStack() as stack:
        for _ in range(6):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(
                b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                b"\r\nContent-Length: 100\r\n\r\n{"
            )
        time.sleep(0.2)
        started = time.monotonic()
        with httpx.Client(base_url=slow_mid.url, timeout=5) as client:
            full = client.get("/healthz")
        assert full.status_code == 503, full.status_code
        assert time.monotonic() - started < 1
        time.sleep(2)  # the body timeout closes the slow ones
        with httpx.Client(base_url=slow_mid.url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
