"""The real MTA under bad input and over TLS: one MTA start, three accounts side by side.

- `ops_sms` (plain TCP) binds its transmitter to the raw fake SMSC of
  smsmta/testing/smpp_fuzzer.py, which sends it mutated PDUs (the MTA target of
  test_smpp_fuzz.py): every bad PDU gets SMPP's answer, no process dies, and the queue is
  sent afterwards.
- `ops_verify` and `ops_skip` use TLS to the simulator behind a TLS-terminating proxy with
  a self-signed certificate made by the test (`openssl`, as in tests/smpp/test_aio.py:
  `cryptography` is not in the venv). `ops_verify` verifies and has no CA: every bind
  attempt fails with an error naming the account and the reason, and none of its MTs
  leaves (they go back to the queue at stop). `ops_skip` sets
  `smsc.skip_tls_verification`: its MTs go, and the warning is logged at every connect
  (its links are cut twice to count them).

Sharing one MTA keeps the suite short (an MTA start costs seconds on a loaded machine)
and shows that one account's bad SMSC does not disturb the others.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import psycopg
import pytest

from smsmta.queue.enqueue import DeliverySpec, create_delivery, enqueue
from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.testing.smpp_fuzzer import (
    FakeSmsc,
    Tally,
    fuzz_esme,
)
from smsmta.testing.smpp_mutations import (
    ESME_TX,
    make_cases,
)
from tests.badinput.test_smpp_fuzz import FUZZ_PDUS, SEED, report
from tests.mta.conftest import (
    ACCOUNT,
    Harness,
    harness,  # noqa: F401  (the fixture)
    mid_config,
)
from tests.smpp.test_aio import (
    certificate,  # noqa: F401  (the fixture)
    tls_proxy,
)

pytestmark = pytest.mark.timeout(120)

VERIFYING, SKIPPING = "ops_verify", "ops_skip"


def three_accounts(fake_port: int, tls_port: int) -> str:
    """ACCOUNT plain to the fake SMSC; VERIFYING and SKIPPING over TLS to the proxy."""
    config = json.loads(mid_config(fake_port, children=1, connections=1, mt_timeout=1.0))
    plain = config["accounts"][0]
    for name, system_id, skip in ((VERIFYING, "verifier", False), (SKIPPING, "skipper", True)):
        account = copy.deepcopy(plain)
        account["name"] = name
        account["connection"].update(tls=True, port=tls_port, system_id=system_id)
        account["smsc"] = {"skip_tls_verification": skip}
        config["accounts"].append(account)
    return json.dumps(config, indent=2)


def log_events(text: str, event: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                events.append(entry)
    return events


async def fill(mid: Harness, account_id: int, count: int, tag: str) -> None:
    async with await psycopg.AsyncConnection.connect(mid.dsn, autocommit=True) as db:
        delivery = await create_delivery(db, account_id, DeliverySpec(tag))
        rows = ((i, f"+3361{i:07d}", f"Hello {i}") for i in range(count))
        await enqueue(db, delivery, account_id, rows)


async def count_status(mid: Harness, account_id: int) -> dict[str, int]:
    rows = await mid.query(
        "SELECT status::text, count(*) FROM mid.broad_log WHERE account_id = %s GROUP BY 1",
        account_id,
    )
    return dict(rows)


async def test_mta_fuzzed_on_one_account_tls_refused_on_another_skipped_on_a_third(
    harness: Harness,  # noqa: F811
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    simulator = SimulatorConfig(
        port=0, seed=7, accounts={"verifier": "secret", "skipper": "secret"}
    )
    async with Smsc(simulator) as smsc, FakeSmsc() as fake:
        proxy, tls_port = await tls_proxy(certificate, smsc.port)
        try:
            path, config = harness.write_config(three_accounts(fake.port, tls_port))
            ids = {n: await harness.account_id(config, n) for n in (ACCOUNT, VERIFYING, SKIPPING)}
            await fill(harness, ids[VERIFYING], 5, "verify")
            mta = await harness.start_mta(path)
            await fake.bound_link(30)

            # 1. the plain account's transmitter gets the mutated PDUs
            children = {child.pid for child in mta.children()}
            tally = Tally("MTA (transmitter)")
            await fuzz_esme(fake, make_cases(SEED + 2, ESME_TX, FUZZ_PDUS), tally)
            if mta.process.returncode is not None or {c.pid for c in mta.children()} != children:
                tally.crashes += 1
            if "Traceback" in mta.log():
                tally.crashes += 1

            # 2. the skipping account: three connects (its links cut twice)
            for binds in (1, 2, 3):

                async def bound(n: int = binds) -> bool:
                    return smsc.counters.binds_total >= n

                await harness.wait_until(bound, 60, f"TLS bind number {binds}", mta)
                if binds < 3:
                    smsc.drop_links()

            # 3. afterwards both working accounts send their queue; the first two submit_sm
            # of the plain account get a malformed submit_sm_resp: not answered, the MTs time
            # out (mt_timeout), the bind is reset and they are sent again
            fake.bad_submit_resps = 2
            await fill(harness, ids[ACCOUNT], 20, "plain")
            await fill(harness, ids[SKIPPING], 5, "skip")

            async def sent() -> bool:
                return (await count_status(harness, ids[ACCOUNT])).get("sent") == 20 and (
                    await count_status(harness, ids[SKIPPING])
                ).get("sent") == 5

            await harness.wait_until(sent, 60, "the MTs of both working accounts sent", mta)

            async def failed_twice() -> bool:
                return len(log_events(mta.log(), "smpp.bind_failed")) >= 2

            await harness.wait_until(failed_twice, 60, "two failed TLS binds", mta)
            assert fake.submits >= 22 and len(fake.bad_resp_sequences) == 2
            resends = await harness.query(
                "SELECT count(*) FROM mid.broad_log WHERE account_id = %s AND possible_duplicate",
                ids[ACCOUNT],
            )
            assert resends[0][0] >= 2
            for link in fake.all_links:  # a bad response is never answered
                assert not set(fake.bad_resp_sequences) & set(link.answers)
            report(tally, *fake.all_links)

            log = mta.log()
            assert smsc.counters.binds_total == 3  # ops_verify never bound
            assert smsc.counters.submit_sm == 5
            for failure in log_events(log, "smpp.bind_failed"):
                assert failure["level"] == "error", failure
                assert failure["account"] == VERIFYING
                assert f"account {VERIFYING!r}" in failure["error"]
                assert "certificate" in failure["error"] and "self-signed" in failure["error"]
            warnings = log_events(log, "smpp.tls_verification_skipped")
            assert len(warnings) == 3, log[-3000:]  # one at every connect, not once
            assert all(w["level"] == "warning" and w["account"] == SKIPPING for w in warnings)
            assert "secret" not in log
            # ops_verify's MTs: claimed perhaps, never on the wire; handed back at stop
            assert set(await count_status(harness, ids[VERIFYING])) <= {"pending", "sending"}
            assert await mta.stop() == 0
            assert await count_status(harness, ids[VERIFYING]) == {"pending": 5}
        finally:
            proxy.close()
