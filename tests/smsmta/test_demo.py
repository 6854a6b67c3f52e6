"""The README's first command: `smsmta demo` runs the whole stack and ends with the KPIs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smsmta.db.engine import DATABASE_URL_ENV

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_demo_delivers_and_prints_the_kpis(embedded_tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["COLUMNS"] = "120"
    result = subprocess.run(
        [sys.executable, "-m", "smsmta.cli", "demo", "--messages", "200",
         "--data-dir", str(embedded_tmp / "demo")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=170,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "PostgreSQL 16 (embedded) started and migrated" in output
    assert "mid server, MTA (2 children), SMS process, marketing service started" in output
    assert re.search(r"processed\s+│\s+200 \(100\.0 %\)", output), output[-3000:]
    delivered = int(re.search(r"delivered\s+│\s+(\d+)", output).group(1))
    failed = int(re.search(r"failed \(hard\)\s+│\s+(\d+)", output).group(1))
    assert delivered + failed == 200 and delivered >= 180  # the simulator fails about 5%
    assert "SR Simulator" in output  # failures counted by their normalised error
    assert "/metrics" in output and "Logs (JSON lines)" in output
    # every service stopped cleanly: nothing of the demo is left running
    leftovers = subprocess.run(
        ["pgrep", "-f", str(embedded_tmp / "demo")], capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == ""
    logs = embedded_tmp / "demo" / "logs"
    assert {path.name for path in logs.iterdir()} >= {
        "mid.log", "mta.log", "sms-process.log", "marketing.log", "smsc-sim.log"
    }  # fmt: skip


@pytest.mark.timeout(180)
def test_every_service_exposes_what_the_dashboard_and_alerts_use(embedded_tmp: Path) -> None:
    """The demo's stack, scraped: each metric the dashboard or a rule uses is served."""
    import signal
    import urllib.request

    from tests.config.test_observability import (
        alert_expressions,
        base_name,
        dashboard_expressions,
        used_in,
    )

    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["COLUMNS"] = "120"
    demo = subprocess.Popen(
        [sys.executable, "-m", "smsmta.cli", "demo", "--messages", "100", "--keep-running",
         "--data-dir", str(embedded_tmp / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    try:
        lines = []
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "Everything keeps running" in line:
                break
        output = "".join(lines)
        urls = re.findall(r"http://127\.0\.0\.1:\d+/metrics", output)
        assert len(urls) == 4, output[-3000:]
        exposed: set[str] = set()
        for url in urls:
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            exposed |= {
                base_name(line.split()[2])
                for line in body.splitlines()
                if line.startswith("# TYPE")
            }
        wanted = {base_name(n) for n in used_in(dashboard_expressions() + alert_expressions())}
        assert wanted <= exposed, f"not served by any service: {sorted(wanted - exposed)}"
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        rest = demo.communicate(timeout=90)[0]
    assert demo.returncode == 0, rest[-2000:]
    assert "Stopping" in rest
