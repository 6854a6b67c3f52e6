"""The status page shows each operator its own accounts and deliveries only (issue 14, item 6).

Operators `ops` (accounts ops_sms, ops_off) and `rival` (account rival_sms) each create a
delivery with a label that must not leak; each reads /status and finds its own account and
label and none of the other's. An operator with the MONITORING right (and no other) sees
every account and every delivery; an operator with neither right is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from smsmta.db.engine import DATABASE_URL_ENV
from tests.security.conftest import MidServer

OPS_LABEL = "Alice: Black Friday VIP list"
RIVAL_LABEL = "Rival: Cyber Monday churners"
WATCH_PASSWORD = "watch-Pw-8812"


def create(server: MidServer, login: str, password: str, account: str, label: str) -> None:
    with httpx.Client(base_url=server.url, auth=(login, password), timeout=30) as client:
        response = client.post(
            "/api/v1/deliveries",
            json={"marketing_account": account, "marketing_delivery_id": "bf", "label": label},
        )
    assert response.status_code in (200, 201), response.text


def status_page(server: MidServer, login: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, auth=(login, password), timeout=30) as client:
        return client.get("/status")


@pytest.fixture(scope="module")
def watcher(rivals: MidServer) -> tuple[str, str]:
    """An operator holding MONITORING only, made as an operator makes it: with the CLI."""
    login = "watch_all"
    if not rivals.query("SELECT 1 FROM mid.operator WHERE login = %s", login):
        env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
        added = subprocess.run(
            [sys.executable, "-m", "smsmta.cli", "operator", "add", login, "--label", "Watch",
             "--right", "monitoring", "--password-stdin",
             "--url", rivals.db_url.render_as_string(hide_password=False)],
            input=f"{WATCH_PASSWORD}\n", capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert added.stdout.strip() == f"created {login} (Watch): MONITORING"
    return login, WATCH_PASSWORD


@pytest.mark.timeout(60)
def test_each_operator_sees_its_own_accounts_and_deliveries_only(
    rivals: MidServer, operators: dict[str, str], watcher: tuple[str, str]
) -> None:
    create(rivals, "ops", operators["ops"], "sms", OPS_LABEL)
    create(rivals, "rival", operators["rival"], "sms", RIVAL_LABEL)

    mine = status_page(rivals, "ops", operators["ops"])
    assert mine.status_code == 200, mine.text
    assert OPS_LABEL in mine.text
    assert "data-account='ops_sms'" in mine.text and "data-account='ops_off'" in mine.text
    assert "Cyber Monday" not in mine.text and "rival_sms" not in mine.text
    assert "acme_fr_sms" not in mine.text

    theirs = status_page(rivals, "rival", operators["rival"])
    assert theirs.status_code == 200, theirs.text
    assert "Cyber Monday churners" in theirs.text and "data-account='rival_sms'" in theirs.text
    assert "Black Friday" not in theirs.text
    assert "ops_sms" not in theirs.text and "ops_off" not in theirs.text

    every = status_page(rivals, *watcher)
    assert every.status_code == 200, every.text
    for name in ("ops_sms", "ops_off", "rival_sms", "acme_fr_sms"):
        assert f"data-account='{name}'" in every.text, name
    assert "Black Friday VIP list" in every.text and "Cyber Monday churners" in every.text


def test_monitoring_is_for_the_status_page_only_and_no_right_sees_nothing(
    rivals: MidServer, operators: dict[str, str], watcher: tuple[str, str]
) -> None:
    with httpx.Client(base_url=rivals.url, auth=watcher, timeout=30) as client:
        pushed = client.post(
            "/api/v1/deliveries",
            json={"marketing_account": "sms", "marketing_delivery_id": "w", "label": "w"},
        )
        assert pushed.status_code == 403, pushed.text
    refused = status_page(rivals, "viewer", operators["viewer"])
    assert refused.status_code == 403
    assert "Black Friday" not in refused.text
