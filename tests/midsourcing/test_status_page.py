"""The status page, as a person sees it in a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from urllib.parse import quote

from tests.midsourcing.conftest import OPS_PASSWORD, MidServer
from tests.midsourcing.test_api import messages, new_delivery


def browser_dom(url: str) -> str:
    """The page after Chromium loaded and ran it, as a person's browser would show it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: install Debian's chromium package (./run tests does)"
    with tempfile.TemporaryDirectory(prefix="smsmta-chromium-") as profile:
        result = subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--dump-dom", url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_status_page_shows_accounts_queue_and_deliveries(mid_server: MidServer) -> None:
    with mid_server.client() as client:
        delivery = new_delivery(client)
        pushed = client.post(
            f"/api/v1/deliveries/{delivery['id']}/messages", json={"messages": messages(25)}
        )
        assert pushed.status_code == 200, pushed.text
    host = mid_server.url.removeprefix("http://")
    dom = browser_dom(f"http://ops:{quote(OPS_PASSWORD)}@{host}/status")
    text = text_of(dom)
    assert "smsmta status" in text and "Signed in as ops" in text
    assert '<meta http-equiv="refresh" content="5">' in dom  # it refreshes itself
    # the account table: every account of the mid server, its queue
    accounts = re.findall(r"data-account=\"([^\"]+)\"", dom)
    assert set(accounts) >= {account.name for account in mid_server.config.accounts}
    row = re.search(r"<tr class=\"account\" data-account=\"ops_sms\">(.*?)</tr>", dom, re.S)
    assert row, dom[:3000]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[1] == "enabled" and cells[6] == "25"  # 25 messages due in the queue
    assert "metrics unreachable" in text  # no MTA runs here: the page says so, it does not fail
    # the delivery in progress with its KPIs
    delivery_row = re.search(
        rf"<tr class=\"delivery\" data-delivery=\"{delivery['id']}\">(.*?)</tr>", dom, re.S
    )
    assert delivery_row, dom[:3000]
    kpis = re.findall(r"<td[^>]*>(.*?)</td>", delivery_row.group(1))
    assert kpis[1] == "ops_sms" and kpis[5] == "25"


def test_the_status_page_needs_an_administrator(mid_server: MidServer) -> None:
    import httpx

    with httpx.Client(base_url=mid_server.url) as anonymous:
        assert anonymous.get("/status").status_code == 401
    with mid_server.client("ops", "wrong password") as wrong:
        assert wrong.get("/status").status_code == 401
