"""SIGTERM to `smsmta demo` stops its whole stack, the embedded PostgreSQL included.

Issue 14: the demo stopped its services on Ctrl-C only; SIGTERM (what `kill`, systemd
and container engines send) killed the demo process alone and left the simulator, the
four services and the embedded PostgreSQL running, the simulator's control port open.
The test starts `smsmta demo --keep-running` (a small delivery), sends SIGTERM once
everything runs, and checks that the demo exits 0, that no process it started
(recursively, whatever their session) and no postgres of its data directory remains.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from smsmta.db.engine import DATABASE_URL_ENV

ROOT = Path(__file__).resolve().parents[2]


def postgres_of(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(folder) in cmdline:
            found.append(process)
    return found


def running(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            continue
    return left


@pytest.mark.timeout(150)
def test_sigterm_stops_the_whole_demo_stack(embedded_tmp: Path) -> None:
    folder = embedded_tmp / "demo"
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["COLUMNS"] = "120"
    demo = subprocess.Popen(
        [sys.executable, "-m", "smsmta.cli", "demo", "--messages", "5", "--keep-running",
         "--data-dir", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    started: list[psutil.Process] = []
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "Everything keeps running" in line:
                break
        assert demo.poll() is None, "".join(lines)[-3000:]
        started = psutil.Process(demo.pid).children(recursive=True) + postgres_of(folder)
        assert len(started) >= 6, started  # simulator, 4 services, postgres (and children)
        stopping = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        rest = demo.communicate(timeout=90)[0]
        assert demo.returncode == 0, rest[-2000:]
        deadline = time.monotonic() + 10
        while (running(started) or postgres_of(folder)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running(started) == [] and running(postgres_of(folder)) == []
        print(f"demo stack stopped {time.monotonic() - stopping:.1f} s after SIGTERM")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for process in started + postgres_of(folder):
            with contextlib.suppress(psutil.Error):
                process.kill()
