"""The midsourcing commands as an operator types them: operators, test connection, preview."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.midsourcing.conftest import OPS_PASSWORD, MidServer

ROOT = Path(__file__).resolve().parents[2]


def smsmta(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SMSMTA_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "smsmta.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_operator_commands_take_passwords_from_stdin_only(mid_server: MidServer) -> None:
    url = mid_server.db_url.render_as_string(hide_password=False)
    added = smsmta(
        "operator", "add", "clerk", "--label", "Clerk", "--right", "reporting",
        "--password-stdin", "--url", url, stdin="first password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "created clerk (Clerk): REPORTING"
    again = smsmta(
        "operator", "add", "clerk", "--label", "Clerk", "--password-stdin", "--url", url,
        stdin="x\n",
    )  # fmt: skip
    assert again.returncode == 2 and "exists already" in again.stderr
    no_argument = smsmta("operator", "add", "x", "--label", "X", "--password", "p", "--url", url)
    assert no_argument.returncode == 2 and "No such option" in no_argument.stderr

    rights = smsmta("operator", "rights", "clerk", "--add", "administration", "--url", url)
    assert rights.stdout.strip() == "clerk (Clerk): REPORTING, ADMINISTRATION"
    changed = smsmta(
        "operator", "passwd", "clerk", "--password-stdin", "--url", url, stdin="new one\n"
    )
    assert changed.returncode == 0, changed.stderr
    with mid_server.client("clerk", "first password") as client:
        assert client.get("/api/v1/connection").status_code == 401
    with mid_server.client("clerk", "new one") as client:
        assert client.get("/api/v1/connection").status_code == 200

    listed = smsmta("operator", "list", "--json", "--url", url)
    logins = [json.loads(line)["login"] for line in listed.stdout.splitlines()]
    assert "clerk" in logins and "ops" in logins
    assert "password" not in listed.stdout.replace("has_password", "")
    removed = smsmta("operator", "remove", "clerk", "--yes", "--url", url)
    assert removed.returncode == 0
    assert smsmta("operator", "remove", "clerk", "--yes", "--url", url).returncode == 2


def marketing_file(tmp_path: Path, mid_server: MidServer, password: str, account: str) -> Path:
    path = tmp_path / f"marketing-{account}.yaml"
    path.write_text(
        json.dumps(
            {
                "kind": "marketing",
                "database": {"url": mid_server.db_url.render_as_string(hide_password=False)},
                "accounts": [
                    {
                        "name": account,
                        "mid_url": mid_server.url,
                        "operator": "ops",
                        "password": password,
                    }
                ],
                "templates": [{"name": "promo", "account": account, "max_parts": 1}],
            }
        )
    )
    return path


def test_account_test_connection_says_what_is_wrong(mid_server: MidServer, tmp_path: Path) -> None:
    good = smsmta(
        "account", "test-connection", "sms",
        "--config", str(marketing_file(tmp_path, mid_server, OPS_PASSWORD, "sms")),
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "rights ADMINISTRATION" in good.stdout
    assert "OK, deliveries route to ops_sms" in good.stdout
    unrouted = smsmta(
        "account", "test-connection", "promo",
        "--config", str(marketing_file(tmp_path, mid_server, OPS_PASSWORD, "promo")),
    )  # fmt: skip
    assert unrouted.returncode == 1
    assert "no enabled mid account named 'ops_promo'" in unrouted.stderr
    wrong = smsmta(
        "account", "test-connection", "sms",
        "--config", str(marketing_file(tmp_path, mid_server, "not it", "sms")),
    )  # fmt: skip
    assert wrong.returncode == 1 and "401" in wrong.stderr and "login and password" in wrong.stderr
    assert "not it" not in wrong.stdout + wrong.stderr


def test_delivery_preview_with_recipients(mid_server: MidServer, tmp_path: Path) -> None:
    csv_path = tmp_path / "r.csv"
    csv_path.write_text("mobile,first_name\n+33611111111,Anaïs\n+33622222222,李\nbad,x\n")
    config = str(marketing_file(tmp_path, mid_server, OPS_PASSWORD, "sms"))
    result = smsmta(
        "delivery", "preview", "--template", "promo", "--text", "Bonjour {first_name} !",
        "--recipients", str(csv_path), "--json", "--config", config,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    zoe, li = body["previews"]
    assert (zoe["encoding"], zoe["sent_text"], zoe["parts"]) == ("gsm7", "Bonjour Anais !", 1)
    assert (li["encoding"], li["data_coding"]) == ("ucs2", 8)
    assert li["forced_by"]["char"] == "李"
    text = smsmta(
        "delivery", "preview", "--template", "promo", "--text", "x" * 170, "--config", config,
    )  # fmt: skip
    assert "2 part(s) of 153" in text.stdout and "max SMS per message 1: OVER" in text.stdout
    assert "sender shown: +33600000000 (source_number)" in text.stdout
