"""End to end: a 10,000-recipient delivery from a CSV file to the SMSC and back to the KPIs.

Every service runs as an operator runs it, as a subprocess of `python -m smsmta.cli`:
the mid server (`smsmta mid`), the MTA (`smsmta mta`), the SMS process (`smsmta
sms-process`) and the marketing service (`smsmta marketing`); the operator and the
delivery are made with `smsmta operator add` and `smsmta delivery create`. The SMSC is
the simulator in this process, seeded, failing a known share of messages. The mid server
is killed (SIGKILL) while the push is under way and started again: nothing may be lost
and nothing doubled, on the mid queue, at the SMSC and in the marketing KPIs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from smsmta.db.engine import DATABASE_URL_ENV
from smsmta.simulator import DEFAULT_FAILURE_STATS, OutcomePicker, SimulatorConfig, Smsc
from tests.midsourcing.conftest import free_port
from tests.sms_process.conftest import SmsHarness, sms, sms_config  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = 10_000
SEED = 2026
FAIL_RATE = 0.12
PASSWORD = "e2e operator password"


def cli(
    harness: SmsHarness, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, DATABASE_URL_ENV: harness.url.render_as_string(hide_password=False)}
    return subprocess.run(
        [sys.executable, "-m", "smsmta.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def expected_failures() -> Counter[str]:
    """The simulator's failure mix for RECIPIENTS messages: a pure function of the seed."""
    picker = OutcomePicker(FAIL_RATE, DEFAULT_FAILURE_STATS, SEED)
    mix: Counter[str] = Counter()
    for _ in range(RECIPIENTS):
        outcome = picker.pick()
        mix["DELIVRD" if outcome == 0 else DEFAULT_FAILURE_STATS[outcome - 1].stat] += 1
    return mix


@pytest.mark.timeout(240)
async def test_csv_to_smsc_and_back_with_the_mid_server_restarted_during_the_push(
    sms: SmsHarness,  # noqa: F811
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    async with Smsc(
        SimulatorConfig(port=0, seed=SEED, fail_rate=FAIL_RATE, dlr_delay_ms=20)
    ) as smsc:
        mid_port = free_port()
        mid = json.loads(sms_config(smsc.port, connections=2, window=50, mta={"children": 1}))
        mid["mid"] = {"listen": "127.0.0.1", "port": mid_port, "metrics_port": None}
        mid["logging"] = {"level": "info", "format": "json"}
        mid_path = tmp_path / "mid.yaml"
        mid_path.write_text(json.dumps(mid, indent=2))
        marketing = {
            "kind": "marketing",
            "logging": {"level": "info", "format": "json"},
            "marketing": {
                "metrics_port": None,
                "pull_interval": 0.5,
                "push_interval": 0.2,
                "push_chunk_size": 500,
                "retry_initial": 0.2,
                "retry_max": 1,
                "pull_page_size": 5000,
            },
            "accounts": [
                {
                    "name": "sms",
                    "mid_url": f"http://127.0.0.1:{mid_port}",
                    "operator": "ops",
                    "password": PASSWORD,
                    "timeout": 10,
                }
            ],
            "templates": [
                {"name": "promo", "label": "Promotion", "account": "sms", "max_parts": 3}
            ],
        }
        marketing_path = tmp_path / "marketing.yaml"
        marketing_path.write_text(json.dumps(marketing, indent=2))

        result = cli(
            sms,
            "operator", "add", "ops", "--label", "Operations", "--password-stdin",
            "--config", str(mid_path),
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr

        csv_path = tmp_path / "recipients.csv"
        lines = ["mobile,first_name,last_name"]
        lines += [f"+3361{i:07d},Name{i},Family" for i in range(RECIPIENTS)]
        lines.insert(5, "06 12,Bad,Number")  # line 6 of the file
        lines.append(f"+3361{3:07d},Twice,Family")  # repeats line 5
        csv_path.write_text("\n".join(lines) + "\n")
        result = cli(
            sms,
            "delivery", "create", "--template", "promo", "--recipients", str(csv_path),
            "--text", "Hello {first_name}, our offer ends tonight", "--json",
            "--config", str(marketing_path),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        created = json.loads(result.stdout)
        assert created["recipients"] == RECIPIENTS
        assert created["rejected"] == [
            {
                "row": 6,
                "reason": "invalid mobile number '06 12': a national number (TON 2 or a "
                "leading 0) needs the account's default_country",
            },
            {"row": RECIPIENTS + 3, "reason": "mobile number +33610000003 repeats row 5"},
        ]
        delivery_id = created["delivery_id"]

        mid_server = await sms.start_service("mid", mid_path)
        await wait_http(f"http://127.0.0.1:{mid_port}/healthz", mid_server)
        mta = await sms.start_mta(mid_path)
        sms_process = await sms.start_sms_process(mid_path)
        marketing_service = await sms.start_service("marketing", marketing_path)

        async def queued() -> int:
            return int(await sms.scalar("SELECT count(*) FROM mid.broad_log"))

        # kill the mid server in the middle of the push, then start it again
        await sms.until(lambda: _at_least(queued, 2_000), 60, "2,000 queued", marketing_service)
        mid_server.kill()
        await mid_server.process.wait()
        killed_at = await queued()
        await asyncio.sleep(1.0)
        mid_server = await sms.start_service("mid", mid_path, tag="-restarted")
        await wait_http(f"http://127.0.0.1:{mid_port}/healthz", mid_server)

        async def processed() -> bool:
            row = await sms.query(
                "SELECT delivered + failed_hard + failed_soft, state::text "
                "FROM marketing.delivery WHERE id = %s",
                delivery_id,
            )
            return row[0][0] >= RECIPIENTS and row[0][1] == "done"

        await sms.until(
            processed,
            150,
            "10,000 processed in the marketing KPIs",
            mid_server,
            mta,  # type: ignore[arg-type]
            sms_process,
            marketing_service,
        )
        elapsed = time.monotonic() - started

        status = cli(
            sms, "delivery", "status", str(delivery_id), "--json", "--config", str(marketing_path)
        )
        assert status.returncode == 0, status.stderr
        kpis = json.loads(status.stdout)
        table = cli(sms, "delivery", "status", str(delivery_id), "--config", str(marketing_path))
        assert "delivered" in table.stdout

        for service in (marketing_service, sms_process, mid_server):
            assert await service.stop() == 0, service.log()[-2000:]
        assert await mta.stop() == 0

    print(
        f"\ne2e: {RECIPIENTS} recipients CSV -> mid (killed at {killed_at} queued) -> MTA -> "
        f"simulator -> receipts -> marketing KPIs in {elapsed:.1f} s"
    )
    mix = expected_failures()
    failures = RECIPIENTS - mix["DELIVRD"]
    # nothing lost, nothing doubled: on the mid queue, at the SMSC, in the marketing KPIs
    queue = await sms.query(
        "SELECT count(*), count(DISTINCT marketing_message_id), count(DISTINCT address) "
        "FROM mid.broad_log"
    )
    assert queue == [(RECIPIENTS, RECIPIENTS, RECIPIENTS)]
    assert smsc.counters.accepted == RECIPIENTS
    assert smsc.counters.duplicates == 0
    assert kpis["total"] == RECIPIENTS and kpis["rejected"] == 2
    assert kpis["processed"] == RECIPIENTS
    assert (kpis["to_send"], kpis["sent"], kpis["cancelled"]) == (0, 0, 0)
    assert kpis["delivered"] == mix["DELIVRD"]
    assert kpis["failed_hard"] + kpis["failed_soft"] == failures
    by_stat: Counter[str] = Counter()
    for error in kpis["errors"]:
        stat = next(s.stat for s in DEFAULT_FAILURE_STATS if s.stat in error["error"])
        by_stat[stat] += error["count"]
    assert by_stat == Counter({s: n for s, n in mix.items() if s != "DELIVRD"})
    messages = await sms.query(
        "SELECT status::text, count(*) FROM marketing.delivery_message WHERE delivery_id = %s "
        "GROUP BY 1",
        delivery_id,
    )
    assert sum(count for _status, count in messages) == RECIPIENTS


async def _at_least(count: Any, target: int) -> bool:
    return int(await count()) >= target


async def wait_http(url: str, service: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            if service.process.returncode is not None:
                pytest.fail(f"the mid server exited:\n{service.log()[-3000:]}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the mid server did not answer:\n{service.log()[-3000:]}")
            await asyncio.sleep(0.1)
