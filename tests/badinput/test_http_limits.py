"""Bad HTTP input against the real `smsmta mid` process: limits hold and the server lives.

The mid server runs as an operator runs it (`python -m smsmta.cli mid`), with
`max_body_bytes` 2 MiB, so that its resident memory (psutil) is its own. Oversized
bodies, streamed without a length (200 MB) or announced (Content-Length), get 413
quickly without the server's memory following the body; a Content-Length that lies,
deeply nested JSON, invalid UTF-8 and wrong content types get a 4xx saying what and
where; after all of it the server still answers and its memory is back near where it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import URL

from midsourcing import auth
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn
from tests.midsourcing.conftest import (
    OPS_PASSWORD,
    free_port,
    mid_settings,
    module_db,  # noqa: F401
)

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2 * 1024 * 1024
MB = 1024 * 1024


@dataclass
class Mid:
    process: subprocess.Popen[bytes]
    port: int
    token: str
    delivery: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def mid(module_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mid]:  # noqa: F811
    folder = Path(tmp_path_factory.mktemp("http"))
    port = free_port()
    config = folder / "mid.yaml"
    config.write_text(json.dumps(mid_settings(port, max_body_bytes=LIMIT, login_free_failures=100)))
    dsn = libpq_dsn(module_db)
    auth.add_operator(dsn, "ops", "Operations", OPS_PASSWORD, ["ADMINISTRATION"])
    env = {**os.environ, DATABASE_URL_ENV: module_db.render_as_string(hide_password=False)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = folder / "mid.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "smsmta.cli", "mid", "--config", str(config)],
            stdout=out,
            stderr=out,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while True:
                assert process.poll() is None, log.read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        break
                assert time.monotonic() < deadline, "the mid server did not start"
                time.sleep(0.1)
            token = client.post("/api/v1/token", auth=("ops", OPS_PASSWORD)).json()["token"]
            created = client.post(
                "/api/v1/deliveries",
                json={"marketing_account": "sms", "marketing_delivery_id": "limits"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
        yield Mid(process, port, token, created.json()["id"], log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def head(mid: Mid, extra: str) -> bytes:
    return (
        f"POST /api/v1/deliveries/{mid.delivery}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {mid.token}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


class PeakRss:
    """Samples a process's resident memory in a thread; `peak` after the with block."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def read_status(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


@pytest.mark.timeout(60)
def test_a_streamed_200_mb_body_gets_413_without_the_memory_following_it(mid: Mid) -> None:
    before = mid.rss()
    sent = {"bytes": 0}
    chunk = b"%x\r\n" % MB + b" " * MB + b"\r\n"

    def stream(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for _ in range(200):
                sock.sendall(chunk)
                sent["bytes"] += MB

    with (
        PeakRss(mid.process.pid) as rss,
        socket.create_connection(("127.0.0.1", mid.port), timeout=30) as sock,
    ):
        sock.sendall(head(mid, "Transfer-Encoding: chunked\r\n"))
        started = time.monotonic()
        sender = threading.Thread(target=stream, args=(sock,), daemon=True)
        sender.start()
        status = read_status(sock)
        elapsed = time.monotonic() - started
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    print(
        f"\n413 after {elapsed:.2f} s and {sent['bytes'] / MB:.0f} MiB sent of 200; server RSS "
        f"{before / MB:.0f} MiB before, peak {rss.peak / MB:.0f} MiB (limit {LIMIT / MB:.0f} MiB)"
    )
    assert status.startswith("HTTP/1.1 413"), status
    assert sent["bytes"] < 200 * MB  # refused before the end, not after reading it all
    assert rss.peak - before < 40 * MB
    mid.alive()


@pytest.mark.timeout(60)
def test_announced_oversized_bodies_and_lying_lengths(mid: Mid) -> None:
    before = mid.rss()
    for auth_header in (True, False):
        with socket.create_connection(("127.0.0.1", mid.port), timeout=30) as sock:
            request = head(mid, f"Content-Length: {200 * MB}\r\n")
            if not auth_header:
                request = request.replace(f"Authorization: Bearer {mid.token}\r\n".encode(), b"")
            started = time.monotonic()
            sock.sendall(request + b"{" * 1000)
            assert read_status(sock).startswith("HTTP/1.1 413")
            assert time.monotonic() - started < 10  # no waiting for the 200 MB
    # a length that says less than is sent: the rest is not a request, the server says so
    with socket.create_connection(("127.0.0.1", mid.port), timeout=30) as sock:
        sock.sendall(head(mid, "Content-Length: 10\r\n") + b'{"messages": []}' + b"x" * MB)
        first = read_status(sock)
    assert first.startswith("HTTP/1.1 4"), first
    # a length that says more than is sent, then the client goes: nothing breaks
    with socket.create_connection(("127.0.0.1", mid.port), timeout=30) as sock:
        sock.sendall(head(mid, "Content-Length: 1000\r\n") + b'{"messages": ')
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            sock.recv(4096)
    mid.alive()
    assert mid.rss() - before < 40 * MB


@pytest.mark.parametrize(
    ("content", "content_type", "status", "said"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "application/json", 400, "nested too deeply"),
        (b'{"messages": "\xff\xfe"}', "application/json", 400, "not valid UTF-8 at byte 14"),
        (b'{"messages": [1,]}', "application/json", 422, "not valid JSON at character"),
        # not JSON on a state-changing route: 415 (issue 14, cross-site requests)
        (b'{"messages": []}', "text/plain", 415, "application/json only"),
        (b"messages=1", "application/x-www-form-urlencoded", 415, "application/json only"),
        (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", 415,
         "application/json only"),
        (b"", "application/json", 422, "body:"),
        (b'{"messages": [{"id": 1, "to": "+33612345678", "text": "x"}], "extra": 1}',
         "application/json", 422, "body.extra: Extra inputs are not permitted"),
        (b'{"messages": ' + b"[" * 500 + b"]" * 500 + b"}", "application/json", 422,
         "body.messages[0]"),
    ],
)  # fmt: skip
def test_malformed_bodies_get_4xx_saying_what_and_where(
    mid: Mid, content: bytes, content_type: str, status: int, said: str
) -> None:
    with httpx.Client(base_url=mid.url, timeout=30) as client:
        response = client.post(
            f"/api/v1/deliveries/{mid.delivery}/messages",
            content=content,
            headers={"Authorization": f"Bearer {mid.token}", "Content-Type": content_type},
        )
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "errors"}
    assert said in body["message"], body
    assert body["errors"] and "where" in body["errors"][0]
    mid.alive()
