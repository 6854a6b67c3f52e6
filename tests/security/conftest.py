"""Security test harness: a mid API with two rival operators, over HTTP or HTTPS.

`start_server(db, folder, **mid)` starts the real application and server class (those
`smsmta mid` runs) in a thread, against a database made for the session's security tests.
Operators: `ops` (ADMINISTRATION, accounts ops_sms and ops_off), `viewer` (no right),
`rival` (ADMINISTRATION, account rival_sms), `acme` and `acme_fr` (ADMINISTRATION; the
account acme_fr_sms belongs to acme_fr, and its name is what acme + marketing account
`fr_sms` would give). Failed logins are not slowed down here (login_free_failures 100),
nor rate-limited by client address (login_attempts_burst 10,000), so that a walk of every
endpoint with a wrong password gets 401, not 429; a test may set other limits.
`self_signed(folder)` makes a certificate for 127.0.0.1 and its key, encrypted with a
password, with the openssl command.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import URL

from midsourcing import auth
from midsourcing.server import NotifyingServer, uvicorn_config
from smsmta.db.engine import libpq_dsn
from smsmta.settings import MidConfig, load
from smsmta.systemd import Notifier
from tests.conftest import scratch_database
from tests.midsourcing.conftest import (
    OPS_PASSWORD,
    VIEWER_PASSWORD,
    MidServer,
    free_port,
    mid_settings,
)

RIVAL_PASSWORD = "rival-Pw-4471"
ACME_PASSWORD = "acme-Pw-9913"
KEY_PASSWORD = "tls-KeyPw-5521"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its encrypted key."""
    cert, key = folder / "mid.crt", folder / "mid.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-passout", f"pass:{KEY_PASSWORD}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def _account(name: str, operator: str, system_id: str) -> dict[str, Any]:
    return {
        "name": name,
        "operator": operator,
        "label": name,
        "connection": {
            "smsc_name": "Sim",
            "server": "127.0.0.1",
            "port": 2775,
            "system_id": system_id,
            "password": "secret",
        },
    }


def start_server(db: URL, folder: Path, **mid: Any) -> tuple[uvicorn.Server, MidServer]:
    port = free_port()
    limits = {"login_free_failures": 100, "login_attempts_burst": 10_000}
    document = mid_settings(port, **{**limits, **mid})
    document["accounts"] += [
        _account("rival_sms", "rival", "rival"),
        _account("acme_fr_sms", "acme_fr", "acmefr"),
    ]
    path = folder / "mid.yaml"
    path.write_text(json.dumps(document, indent=2))
    config = load(path)
    assert isinstance(config, MidConfig)
    dsn = libpq_dsn(db)
    server = NotifyingServer(uvicorn_config(config, dsn), Notifier({}))
    thread = threading.Thread(target=server.run, name="mid-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the mid API thread died"
        assert time.monotonic() < deadline, "the mid API did not start"
        time.sleep(0.05)
    scheme = "https" if mid.get("tls_certfile") else "http"
    server.thread = thread  # type: ignore[attr-defined]
    return server, MidServer(f"{scheme}://127.0.0.1:{port}", dsn, db, config)


def stop_server(server: uvicorn.Server) -> None:
    server.should_exit = True
    server.thread.join(timeout=30)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def security_db(pg_server_url: URL) -> Iterator[URL]:
    """A database with both schemas migrated, shared by the security tests."""
    with scratch_database(pg_server_url, "smsmta_security", migrated=True) as url:
        yield url


@pytest.fixture(scope="session")
def operators(security_db: URL) -> dict[str, str]:
    """Every operator of the harness, login -> password."""
    dsn = libpq_dsn(security_db)
    people = {
        "ops": (OPS_PASSWORD, ["ADMINISTRATION"]),
        "viewer": (VIEWER_PASSWORD, []),
        "rival": (RIVAL_PASSWORD, ["ADMINISTRATION"]),
        "acme": (ACME_PASSWORD, ["ADMINISTRATION"]),
        "acme_fr": (ACME_PASSWORD, ["ADMINISTRATION"]),
    }
    for login, (password, rights) in people.items():
        auth.add_operator(dsn, login, login.title(), password, rights)
    return {login: password for login, (password, _rights) in people.items()}


@pytest.fixture(scope="session")
def rivals(
    security_db: URL, operators: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MidServer]:
    """The mid API over plain HTTP with the rival operators."""
    server, mid = start_server(security_db, Path(tmp_path_factory.mktemp("rivals")))
    try:
        yield mid
    finally:
        stop_server(server)
