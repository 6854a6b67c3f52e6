"""Issue 14: what a client sends costs the real `smsmta mid` process a bounded amount.

The mid server runs as an operator runs it (`python -m smsmta.cli mid`, its own process,
so that psutil measures its memory alone) with a /metrics port, bodies of at most 12 MiB
and at most 12 MiB of request bodies in flight. Invented HTTP methods are counted under
the label `other` (the /metrics text stays small); concurrent big pushes beyond the
in-flight budget get 503 at once, so the memory does not follow them; a far time-zone
offset, a NUL in a label or service id, a number with a newline, a huge preview: each
gets a clear 4xx or a bounded answer, and the deliveries keep answering.
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
from concurrent.futures import ThreadPoolExecutor
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
MB = 1024 * 1024
BODY_LIMIT = 12 * MB
IN_FLIGHT = 12 * MB


@dataclass
class Mid:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    dsn: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=("ops", OPS_PASSWORD), timeout=60)

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def mid(module_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mid]:  # noqa: F811
    folder = Path(tmp_path_factory.mktemp("bounds"))
    port, metrics_port = free_port(), free_port()
    settings = mid_settings(
        port,
        metrics_port=metrics_port,
        max_body_bytes=BODY_LIMIT,
        max_body_bytes_in_flight=IN_FLIGHT,
        login_free_failures=100,
    )
    config = folder / "mid.yaml"
    config.write_text(json.dumps(settings))
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
        yield Mid(process, port, metrics_port, dsn, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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


def create(mid: Mid, name: str, **options: object) -> httpx.Response:
    with mid.client() as client:
        return client.post(
            "/api/v1/deliveries",
            json={
                "marketing_account": "sms",
                "marketing_delivery_id": name,
                "label": name,
                "options": options,
            },
        )


def big_chunk(size: int) -> bytes:
    text = "x" * 1100
    count = size // (len(text) + 60)
    messages = [{"id": i + 1, "to": f"+336{i:08d}", "text": text} for i in range(count)]
    return json.dumps({"messages": messages}).encode()


@pytest.mark.timeout(120)
def test_concurrent_big_pushes_are_bounded_in_memory(mid: Mid) -> None:
    """Six 11 MB pushes at once: those over the in-flight budget get 503 at once."""
    created = create(mid, "big-pushes")
    assert created.status_code == 201, created.text
    delivery = created.json()["id"]
    body = big_chunk(11 * MB)
    assert len(body) <= BODY_LIMIT
    gate = threading.Barrier(6)

    def push(_index: int) -> int:
        with mid.client() as client:
            gate.wait(timeout=30)
            return client.post(
                f"/api/v1/deliveries/{delivery}/messages",
                content=body,
                headers={"Content-Type": "application/json"},
            ).status_code

    before = mid.rss()
    started = time.monotonic()
    with PeakRss(mid.process.pid) as rss, ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(push, range(6)))
    elapsed = time.monotonic() - started
    grown = (rss.peak - before) / MB
    print(f"\n6 x {len(body) / MB:.1f} MB pushes: {codes} in {elapsed:.1f} s, RSS +{grown:.0f} MiB")
    assert 200 in codes, codes
    assert 503 in codes, codes  # over the budget: refused at once, not queued in memory
    assert grown < 150, f"the mid grew {grown:.0f} MiB"
    mid.alive()


def test_invented_methods_are_counted_as_other_and_metrics_stay_small(mid: Mid) -> None:
    with httpx.Client(base_url=mid.url, timeout=30) as client:
        for index in range(300):
            client.request(f"INVENTED{index}", "/healthz")
            client.request(f"X{index}Y", "/api/v1/deliveries/1")
    text = httpx.get(f"http://127.0.0.1:{mid.metrics_port}/metrics", timeout=30).text
    requests = [line for line in text.splitlines() if line.startswith("smsmta_mid_requests")]
    assert 'method="other"' in text
    assert "INVENTED" not in text and 'method="X' not in text
    methods = {line.split('method="')[1].split('"')[0] for line in requests if "method=" in line}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert len(text) < 200_000, len(text)


@pytest.mark.parametrize("offset", ["-23:59", "+23:59", "-18:00", "+15:00"])
def test_a_far_time_zone_offset_is_refused_and_deliveries_keep_answering(
    mid: Mid, offset: str
) -> None:
    name = f"tz{offset[0]}{offset[1:3]}".replace("+", "p")
    response = create(mid, name, validity_end=f"2099-12-31T23:00:00{offset}")
    assert response.status_code == 422, response.text
    assert "body.options.validity_end" in response.json()["message"]
    # past 2099 once in UTC, even with a sane offset: refused too
    late = create(mid, "late", validity_end="2099-12-31T23:30:00-01:00")
    assert late.status_code == 422, late.text
    # a sane offset is normalised to UTC and the delivery answers
    fine = create(mid, "tz-fine", validity_end="2099-06-30T12:00:00-05:00")
    assert fine.status_code in (200, 201), fine.text
    assert fine.json()["options"]["validity_end"].startswith("2099-06-30T17:00:00")
    with mid.client() as client:
        assert client.get(f"/api/v1/deliveries/{fine.json()['id']}").status_code == 200


@pytest.mark.parametrize(
    ("field", "options", "label"),
    [
        ("body.label", {}, "spring\x00sale"),
        ("body.label", {}, "spring\x1bsale"),
        ("body.options.service_id", {"service_id": "svc\x00"}, "ok"),
        ("body.options.service_id", {"service_id": "svc\n"}, "ok"),
    ],
)
def test_control_characters_in_label_or_service_id_get_422_naming_the_field(
    mid: Mid, field: str, options: dict[str, object], label: str
) -> None:
    with mid.client() as client:
        response = client.post(
            "/api/v1/deliveries",
            json={
                "marketing_account": "sms",
                "marketing_delivery_id": f"ctl-{abs(hash((field, label, str(options)))) % 10**6}",
                "label": label,
                "options": options,
            },
        )
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(field), response.json()
    mid.alive()


def test_a_number_with_a_newline_is_not_stored_with_it(mid: Mid) -> None:
    created = create(mid, "newline")
    delivery = created.json()["id"]
    with mid.client() as client:
        response = client.post(
            f"/api/v1/deliveries/{delivery}/messages",
            json={"messages": [{"id": 1, "to": "+33612345678\n", "text": "hello"}]},
        )
    assert response.status_code in (200, 422), response.text
    with contextlib.closing(__import__("psycopg").connect(mid.dsn)) as conn:
        rows = conn.execute(
            "SELECT address FROM mid.broad_log WHERE delivery_id = %s", (delivery,)
        ).fetchall()
    assert all("\n" not in address and address.strip() == address for (address,) in rows), rows


def test_a_huge_preview_gets_a_bounded_answer(mid: Mid) -> None:
    # every character transliterated: the answer listed each one, 30 times the request
    request = {"marketing_account": "sms", "texts": ["\u00ea" * 39_015] * 20}
    sent = len(json.dumps(request).encode())
    with mid.client() as client:
        response = client.post("/api/v1/preview", json=request)
    assert response.status_code in (200, 413, 422), response.text[:300]
    print(f"\npreview: {sent / MB:.1f} MB asked, {len(response.content) / MB:.1f} MB answered")
    assert len(response.content) < 4 * sent + 100_000
    if response.status_code == 200:
        first = response.json()["previews"][0]
        assert first["transliterated_count"] == 39_015
        assert len(first["transliterated"]) <= 100


def test_docs_reference_no_external_host(mid: Mid) -> None:
    with httpx.Client(base_url=mid.url, timeout=30) as client:
        for path in ("/docs", "/redoc"):
            response = client.get(path)
            assert response.status_code in (200, 404), response.status_code
            body = response.text
            for needle in ("cdn.", "jsdelivr", "unpkg", "fonts.googleapis", "https://", "//"):
                if response.status_code == 200:
                    assert needle not in body.replace("//127.0.0.1", ""), (path, needle)


def test_the_server_is_alive_after_all(mid: Mid) -> None:
    with socket.create_connection(("127.0.0.1", mid.port), timeout=10):
        pass
    mid.alive()
