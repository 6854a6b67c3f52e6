"""No password reaches anything a full run produces.

The whole stack runs as an operator runs it (the real `smsmta mid` over HTTPS with an
encrypted key, `smsmta mta`, `smsmta sms-process`, `smsmta marketing`, the CLI) against
the simulator, with a distinctive password in every place one can be: the SMPP account,
an SMPP account whose password is wrong (its binds are refused), the operator (also the
marketing side's credentials to the mid server), the TLS key, the database URL (a role
made for the test), a failed API login, a failed `account test-connection`, a settings
file rejected for a too-long password; verbose SMPP trace on. Then every log of every
process, the test process's own output, every service's /metrics, the /status page, the
CLI outputs and errors, the API's error bodies and every row of both schemas are
searched for each password, its base64 in HTTP Basic form and its hex as in a PDU dump.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from smsmta.cli import main
from smsmta.db.engine import DATABASE_URL_ENV, libpq_dsn
from smsmta.simulator import SimulatorConfig, Smsc
from tests.midsourcing.conftest import free_port
from tests.security.conftest import KEY_PASSWORD, self_signed
from tests.sms_process.conftest import SmsHarness, sms, sms_config  # noqa: F401

SMPP_PASSWORD = "Qz8smPw1"
SMPP_WRONG = "Wq3bAdPw"
OPERATOR_PASSWORD = "OpPw-Zebra-7731"
FAILED_LOGIN = "BadLogin-Yak-5512"
DB_PASSWORD = "DbPw-Lynx-6604"
TOO_LONG = "CfgErr-Long-Pw-4417"
PASSWORDS = {
    "SMPP account": SMPP_PASSWORD,
    "wrong SMPP": SMPP_WRONG,
    "operator": OPERATOR_PASSWORD,
    "failed login": FAILED_LOGIN,
    "TLS key": KEY_PASSWORD,
    "database": DB_PASSWORD,
    "rejected setting": TOO_LONG,
}
RECIPIENTS = 20


def forms(password: str) -> dict[str, str]:
    """Every way a password could be written out: plain, Basic, hex, URL-quoted."""
    raw = password.encode()
    found = {
        "plain": password,
        "base64": base64.b64encode(raw).decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "spaced hex": " ".join(f"{b:02x}" for b in raw),
        "url-quoted": quote(password, safe=""),
    }
    for login in ("ops", "smsmta", "badbind"):
        found[f"Basic {login}"] = base64.b64encode(f"{login}:{password}".encode()).decode()
    return found


def leaks(texts: dict[str, str]) -> list[str]:
    hits = []
    for where, text in texts.items():
        for what, password in PASSWORDS.items():
            for form, needle in forms(password).items():
                if needle in text:
                    hits.append(f"{what} password ({form}) in {where}")
    return hits


def database_dump(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('mid', 'marketing') AND table_type = 'BASE TABLE'"
        ).fetchall()
        assert len(tables) >= 10, tables
        return "\n".join(
            f"{schema}.{table}: "
            + str(
                conn.execute(
                    f"SELECT coalesce(string_agg(row_to_json(t)::text, '\\n'), '') "
                    f'FROM "{schema}"."{table}" t'
                ).fetchone()
            )
            for schema, table in tables
        )


@pytest.mark.timeout(180)
async def test_no_password_in_logs_traces_metrics_status_page_errors_or_database(
    sms: SmsHarness,  # noqa: F811
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    produced: dict[str, str] = {}
    role = f"smsmta_sec_{uuid.uuid4().hex[:8]}"
    admin_dsn = libpq_dsn(sms.url)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")
    sms.url = sms.url.set(username=role, password=DB_PASSWORD)  # every service gets this URL
    cert, key = self_signed(tmp_path)
    secret = tmp_path / "tls-key.secret"
    secret.write_text(KEY_PASSWORD + "\n")
    ports = {name: free_port() for name in ("mid", "mid_metrics", "mta", "sms", "marketing")}
    smsc_config = SimulatorConfig(
        port=0, seed=11, password=SMPP_PASSWORD, accounts={"badbind": "Rr5okPw2"}, dlr_delay_ms=20
    )
    try:
        async with Smsc(smsc_config) as smsc:
            mid = json.loads(
                sms_config(
                    smsc.port,
                    mta={"metrics_port": ports["mta"]},
                    sms_process={"metrics_port": ports["sms"]},
                )
            )
            account = mid["accounts"][0]
            account["connection"]["password"] = SMPP_PASSWORD
            account["connection"]["verbose_trace"] = True
            bad = json.loads(json.dumps(account))
            bad["name"] = "ops_bad"
            bad["connection"].update(system_id="badbind", password=SMPP_WRONG)
            mid["accounts"].append(bad)
            mid["mid"] = {
                "listen": "127.0.0.1",
                "port": ports["mid"],
                "metrics_port": ports["mid_metrics"],
                "tls_certfile": str(cert),
                "tls_keyfile": str(key),
                "tls_keyfile_password": {"file": str(secret)},
            }
            mid_path = tmp_path / "mid.yaml"
            mid_path.write_text(json.dumps(mid, indent=2))
            mid_url = f"https://127.0.0.1:{ports['mid']}"
            marketing = {
                "kind": "marketing",
                "logging": {"level": "debug", "format": "json"},
                "marketing": {
                    "metrics_port": ports["marketing"],
                    "pull_interval": 0.5,
                    "push_interval": 0.2,
                    "retry_initial": 0.2,
                    "retry_max": 1,
                },
                "accounts": [
                    {
                        "name": "sms",
                        "mid_url": mid_url,
                        "operator": "ops",
                        "password": OPERATOR_PASSWORD,
                        "ca_file": str(cert),
                        "timeout": 10,
                    }
                ],
                "templates": [{"name": "promo", "account": "sms", "max_parts": 3}],
            }
            marketing_path = tmp_path / "marketing.yaml"
            marketing_path.write_text(json.dumps(marketing, indent=2))
            wrong = json.loads(json.dumps(marketing))
            wrong["accounts"][0]["password"] = FAILED_LOGIN
            wrong_path = tmp_path / "marketing-wrong.yaml"
            wrong_path.write_text(json.dumps(wrong, indent=2))
            rejected = json.loads(json.dumps(mid))
            rejected["accounts"][0]["connection"]["password"] = TOO_LONG
            rejected["mid"]["port"] = "not a port"
            rejected_path = tmp_path / "rejected.yaml"
            rejected_path.write_text(json.dumps(rejected, indent=2))

            started = time.monotonic()
            marks: list[str] = []

            def mark(what: str) -> None:
                marks.append(f"[{time.monotonic() - started:5.1f} s] {what}")

            def run(name: str, *args: str, stdin: str | None = None, code: int = 0) -> None:
                """The CLI in this process (click's runner): the same code, no start-up cost."""
                env = {DATABASE_URL_ENV: sms.url.render_as_string(hide_password=False)}
                result = CliRunner().invoke(main, list(args), input=stdin, env=env)
                produced[f"CLI {name}"] = result.output + result.stderr
                mark(name)
                assert result.exit_code == code, (name, result.output, result.exception)
                assert "Traceback" not in result.output, result.output

            await asyncio.to_thread(
                run, "config check (rejected)", "config", "check", str(rejected_path), code=2
            )
            assert "at most 8 characters" in produced["CLI config check (rejected)"]
            await asyncio.to_thread(
                run,
                "operator add",
                "operator", "add", "ops", "--label", "Operations", "--password-stdin",
                "--config", str(mid_path),
                stdin=OPERATOR_PASSWORD + "\n",
            )  # fmt: skip
            csv_path = tmp_path / "recipients.csv"
            rows = [f"+3361{i:07d},N{i}" for i in range(RECIPIENTS)]
            csv_path.write_text("mobile,name\n" + "\n".join(rows) + "\n")
            await asyncio.to_thread(
                run,
                "delivery create",
                "delivery", "create", "--template", "promo", "--recipients", str(csv_path),
                "--text", "Hello {name}", "--json", "--config", str(marketing_path),
            )  # fmt: skip
            delivery_id = json.loads(produced["CLI delivery create"])["delivery_id"]

            mid_server = await sms.start_service("mid", mid_path)
            trusted = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(base_url=mid_url, verify=trusted, timeout=30) as http:
                deadline = time.monotonic() + 60
                while True:
                    assert mid_server.process.returncode is None, mid_server.log()[-3000:]
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    assert time.monotonic() < deadline, "the mid server did not start"
                    await asyncio.sleep(0.1)
                mark("mid up")
                mta = await sms.start_mta(mid_path)  # logs to mta-mid.log
                sms_process = await sms.start_sms_process(mid_path)
                marketing_service = await sms.start_service("marketing", marketing_path)
                mark("services started")

                failed = await http.post("/api/v1/token", auth=("ops", FAILED_LOGIN))
                assert failed.status_code == 401
                produced["API failed login answer"] = failed.text + str(failed.headers)
                await asyncio.to_thread(
                    run,
                    "account test-connection (wrong password)",
                    "account", "test-connection", "sms", "--config", str(wrong_path),
                    code=1,
                )  # fmt: skip

                async def done() -> bool:
                    row = await sms.query(
                        "SELECT delivered + failed_hard + failed_soft, state::text "
                        "FROM marketing.delivery WHERE id = %s",
                        delivery_id,
                    )
                    return row[0][0] >= RECIPIENTS and row[0][1] == "done"

                async def refused() -> bool:
                    return smsc.counters.binds_refused >= 1

                services = (mid_server, sms_process, marketing_service)
                await sms.until(done, 120, "the delivery done", *services)
                mark("delivery done")
                await sms.until(refused, 60, "a bind refused for a wrong password", *services)

                page = await http.get("/status", auth=("ops", OPERATOR_PASSWORD))
                assert page.status_code == 200 and "ops_sms" in page.text
                produced["/status page"] = page.text
            async with httpx.AsyncClient(timeout=30) as plain:
                for name in ("mid_metrics", "mta", "sms", "marketing"):
                    metrics = await plain.get(f"http://127.0.0.1:{ports[name]}/metrics")
                    assert metrics.status_code == 200 and "smsmta_" in metrics.text
                    produced[f"/metrics of {name}"] = metrics.text
            await asyncio.to_thread(
                run,
                "delivery status",
                "delivery", "status", str(delivery_id), "--config", str(marketing_path),
            )  # fmt: skip
            for service, name in zip(
                services[::-1], ("marketing", "SMS process", "mid"), strict=True
            ):
                assert await service.stop() == 0, service.log()[-2000:]
                mark(f"{name} stopped")
            assert await mta.stop() == 0
            mark("stopped")
        assert smsc.counters.binds_refused >= 1
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    logs = sorted(tmp_path.glob("*.log"))
    assert len(logs) >= 4, logs
    for log in logs:
        produced[f"log {log.name}"] = log.read_text(errors="replace")
    trace = produced["log mta-mid.log"]
    assert "smpp.pdu.out" in trace and "bind_transmitter" in trace  # the trace was on
    produced["database"] = database_dump(sms.dsn)
    captured = capfd.readouterr()
    produced["the test process's output"] = captured.out + captured.err
    print("\n" + "\n".join(marks))
    assert leaks(produced) == []
    # the search finds what it looks for: every password is in the files that hold it
    assert SMPP_PASSWORD in mid_path.read_text() and TOO_LONG in rejected_path.read_text()
    assert {
        "SMPP account password (plain) in mid.yaml",
        "wrong SMPP password (plain) in mid.yaml",
    } <= set(leaks({"mid.yaml": mid_path.read_text()}))
