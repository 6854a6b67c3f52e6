"""`smsmta mid` and `smsmta marketing` tell systemd when they are ready and when they stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import URL

from smsmta.db.engine import DATABASE_URL_ENV
from tests.midsourcing.conftest import free_port, mid_settings

ROOT = Path(__file__).resolve().parents[2]


def run_and_listen(command: list[str], config: dict, tmp_path: Path, url: URL) -> list[bytes]:
    """Start the service with a notify socket; SIGTERM after READY; every datagram sent."""
    path = tmp_path / f"{command[0]}.yaml"
    path.write_text(json.dumps(config))
    sock_path = tmp_path / f"{command[0]}.notify"
    env = {
        **os.environ,
        DATABASE_URL_ENV: url.render_as_string(hide_password=False),
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "1000000",  # keep-alives every 0.5 s
        "WATCHDOG_PID": "",
    }
    datagrams: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(sock_path))
        notify.settimeout(60)
        service = subprocess.Popen(
            [sys.executable, "-m", "smsmta.cli", *command, "--config", str(path)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            while not any(d.startswith(b"READY=1") for d in datagrams):
                datagrams.append(notify.recv(4096))
            datagrams.append(notify.recv(4096))  # the next keep-alive
            service.send_signal(signal.SIGTERM)
            while b"STOPPING=1" not in datagrams:
                datagrams.append(notify.recv(4096))
            assert service.wait(timeout=60) == 0, service.stderr.read().decode()[-2000:]
        finally:
            if service.poll() is None:
                service.kill()
    return datagrams


@pytest.mark.timeout(120)
def test_the_mid_server_notifies(module_db: URL, tmp_path: Path) -> None:
    config = mid_settings(free_port())
    datagrams = run_and_listen(["mid"], config, tmp_path, module_db)
    assert any(d.startswith(b"READY=1\nSTATUS=mid API on port") for d in datagrams)
    assert b"WATCHDOG=1" in datagrams and datagrams[-1] == b"STOPPING=1"


@pytest.mark.timeout(120)
def test_the_marketing_service_notifies(module_db: URL, tmp_path: Path) -> None:
    config = {
        "kind": "marketing",
        "marketing": {"metrics_port": None},
        "accounts": [{"name": "sms", "mid_url": "http://127.0.0.1:9", "operator": "ops"}],
    }
    datagrams = run_and_listen(["marketing"], config, tmp_path, module_db)
    assert b"READY=1\nSTATUS=1 account(s)" in datagrams
    assert b"WATCHDOG=1" in datagrams and datagrams[-1] == b"STOPPING=1"


@pytest.mark.timeout(120)
def test_the_sms_process_notifies(module_db: URL, tmp_path: Path) -> None:
    # its receivers retry their binds in the background (no SMSC here): it is up all the same
    config = mid_settings(free_port(), smpp_port=free_port())
    config["sms_process"] = {"metrics_port": None}
    datagrams = run_and_listen(["sms-process"], config, tmp_path, module_db)
    assert any(d.startswith(b"READY=1\nSTATUS=") for d in datagrams)
    assert b"WATCHDOG=1" in datagrams and datagrams[-1] == b"STOPPING=1"
