"""TLS on the mid API: HTTPS only, trusted through the CA the client is given, nothing else.

A self-signed certificate for 127.0.0.1 is made by the test (openssl), its key encrypted
with a password the server reads from its settings (tls_keyfile_password). A client
that verifies against that certificate gets answers; one without it fails the
handshake; plain HTTP on the port gets no answer; the marketing service's client
(midsourcing.client) connects with `ca_file` and refuses the server without it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import URL

from midsourcing.client import MidClient, MidError
from smsmta.settings import MarketingAccount
from tests.security.conftest import (
    KEY_PASSWORD,
    OPS_PASSWORD,
    MidServer,
    self_signed,
    start_server,
    stop_server,
)


@pytest.fixture(scope="module")
def https(
    security_db: URL, operators: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MidServer, Path]]:
    folder = Path(tmp_path_factory.mktemp("tls"))
    cert, key = self_signed(folder)
    server, mid = start_server(
        security_db,
        folder,
        tls_certfile=str(cert),
        tls_keyfile=str(key),
        tls_keyfile_password=KEY_PASSWORD,
    )
    try:
        yield mid, cert
    finally:
        stop_server(server)


def account(mid: MidServer, **tls: object) -> MarketingAccount:
    return MarketingAccount.model_validate(
        {"name": "sms", "mid_url": mid.url, "operator": "ops", "password": OPS_PASSWORD, **tls}
    )


def test_https_only_and_trusted_only_through_its_ca(https: tuple[MidServer, Path]) -> None:
    mid, cert = https
    assert mid.url.startswith("https://")
    trusted = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=mid.url, verify=trusted, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/v1/connection", auth=("ops", OPS_PASSWORD)).status_code == 200
    with (
        httpx.Client(base_url=mid.url, timeout=30) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get("/healthz")  # the system's CAs do not know it
    plain = mid.url.replace("https://", "http://")
    with httpx.Client(base_url=plain, timeout=30) as client, pytest.raises(httpx.HTTPError):
        client.get("/api/v1/connection", auth=("ops", OPS_PASSWORD))


def test_the_marketing_client_needs_the_ca_file(https: tuple[MidServer, Path]) -> None:
    mid, cert = https

    async def connect(acct: MarketingAccount) -> object:
        async with MidClient(acct) as client:
            return await client.test_connection()

    connection = asyncio.run(connect(account(mid, ca_file=str(cert))))
    assert [a.name for a in connection.accounts] == ["ops_sms"]  # type: ignore[attr-defined]
    with pytest.raises(MidError) as refused:
        asyncio.run(connect(account(mid)))
    assert "certificate" in str(refused.value) and "ca_file" in str(refused.value)
    assert refused.value.retryable is False  # trying again cannot help: the settings must change
    assert OPS_PASSWORD not in str(refused.value)


def test_an_idle_https_client_does_not_hold_the_stop(
    security_db: URL, operators: dict[str, str], tmp_path: Path
) -> None:
    """A pooled idle connection (what the marketing service keeps) never sends TLS's
    close_notify: the stop must not wait the 30 s graceful timeout for it."""
    cert, key = self_signed(tmp_path)
    server, mid = start_server(
        security_db,
        tmp_path,
        tls_certfile=str(cert),
        tls_keyfile=str(key),
        tls_keyfile_password=KEY_PASSWORD,
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=mid.url, verify=trusted, timeout=30) as idle:
        assert idle.get("/healthz").status_code == 200
        started = time.monotonic()
        stop_server(server)
        took = time.monotonic() - started
    assert not server.thread.is_alive()  # type: ignore[attr-defined]
    assert took < 10, f"the stop took {took:.1f} s with an idle HTTPS client"
