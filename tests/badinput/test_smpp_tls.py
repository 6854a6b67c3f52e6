"""SMPP over TLS in the real MTA: a certificate that does not verify stops the account cold.

The simulator sits behind a TLS-terminating proxy with a self-signed certificate made by
the test (`openssl`, as in tests/smpp/test_aio.py: `cryptography` is not in the venv).
Verification on and no CA given: every bind attempt fails with an error that names the
account and the reason, and no MT leaves. `smsc.skip_tls_verification`: the MTs go, and
the warning is logged at every connect (the links are cut twice to count them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smpp.simulator import Smsc
from tests.mta.conftest import (
    ACCOUNT,
    Harness,
    harness,  # noqa: F401  (the fixture)
    mid_config,
    smsc,  # noqa: F401  (the fixture)
)
from tests.smpp.test_aio import (
    certificate,  # noqa: F401  (the fixture)
    tls_proxy,
)

pytestmark = pytest.mark.timeout(90)


def tls_config(port: int, *, skip: bool) -> str:
    config = json.loads(mid_config(port, children=1, connections=1))
    config["accounts"][0]["connection"]["tls"] = True
    config["accounts"][0]["smsc"] = {"skip_tls_verification": skip}
    return json.dumps(config, indent=2)


def log_events(text: str, event: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                events.append(entry)
    return events


async def test_mta_refuses_an_smsc_certificate_it_cannot_verify(
    harness: Harness,  # noqa: F811
    smsc: Smsc,  # noqa: F811
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    proxy, port = await tls_proxy(certificate, smsc.port)
    try:
        path, config = harness.write_config(tls_config(port, skip=False))
        await harness.enqueue(config, 5)
        mta = await harness.start_mta(path)

        async def failed_twice() -> bool:
            return len(log_events(mta.log(), "smpp.bind_failed")) >= 2

        await harness.wait_until(failed_twice, 60, "two failed TLS binds", mta)
        for failure in log_events(mta.log(), "smpp.bind_failed"):
            assert failure["level"] == "error", failure
            assert f"account {ACCOUNT!r}" in failure["error"]
            assert "certificate" in failure["error"] and "self-signed" in failure["error"]
            assert failure["account"] == ACCOUNT
        assert smsc.counters.binds_total == 0 and smsc.counters.submit_sm == 0
        # claimed perhaps ("sending": held by the child), never on the wire
        assert set(await harness.statuses()) <= {"pending", "sending"}
        assert await harness.query("SELECT * FROM mid.provider_msg_id") == []
        assert "secret" not in mta.log()
        assert await mta.stop() == 0
        assert await harness.statuses() == {"pending": 5}  # handed back unsent
    finally:
        proxy.close()


async def test_mta_skipping_verification_sends_and_warns_at_every_connect(
    harness: Harness,  # noqa: F811
    smsc: Smsc,  # noqa: F811
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    proxy, port = await tls_proxy(certificate, smsc.port)
    try:
        path, config = harness.write_config(tls_config(port, skip=True))
        mta = await harness.start_mta(path)
        for binds in (1, 2, 3):

            async def bound(n: int = binds) -> bool:
                return smsc.counters.binds_total >= n and smsc.counters.connections_total >= n

            await harness.wait_until(bound, 60, f"bind number {binds}", mta)
            if binds < 3:
                smsc.drop_links()  # the MTA reconnects
        await harness.enqueue(config, 5)

        async def all_sent() -> bool:
            return (await harness.statuses()).get("sent") == 5

        await harness.wait_until(all_sent, 60, "the 5 MTs sent over TLS", mta)
        warnings = log_events(mta.log(), "smpp.tls_verification_skipped")
        assert len(warnings) == smsc.counters.binds_total == 3, mta.log()[-3000:]
        assert all(w["level"] == "warning" and w["account"] == ACCOUNT for w in warnings)
        assert await mta.stop() == 0
    finally:
        proxy.close()
