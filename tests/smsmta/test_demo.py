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
def test_demo_delivers_and_prints_the_kpis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["COLUMNS"] = "120"
    result = subprocess.run(
        [sys.executable, "-m", "smsmta.cli", "demo", "--messages", "200",
         "--data-dir", str(tmp_path / "demo")],
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
        ["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == ""
    logs = tmp_path / "demo" / "logs"
    assert {path.name for path in logs.iterdir()} >= {
        "mid.log", "mta.log", "sms-process.log", "marketing.log", "smsc-sim.log"
    }  # fmt: skip
