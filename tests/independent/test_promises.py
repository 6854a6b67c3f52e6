"""smsmta's promises against an SMSC we did not write (smsc.js, the npm package `smpp`).

Each scenario runs the real `smsmta mta` and `smsmta sms-process` against smsc.js and
checks, from the SMSC's own records: every message final and none lost, no destination
submitted twice beyond the scenario's bound, every receipt applied to its own message (the
SMSC decides each destination's outcome; our final status must be that one), opt-outs
honoured, and the scenario's own promise (binds, throttling, receipts on every part).
Each prints one summary line (sent, receipts matched, duplicates, opt-outs honoured).
"""

from __future__ import annotations

import pytest

from smsmta.testing.scenarios import SCENARIOS, Scenario, assert_promises, run_scenario
from tests.sms_process.conftest import SmsHarness

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_promises_against_an_independent_smsc(
    sms: SmsHarness, node_smsc: str, scenario: Scenario
) -> None:
    result = await run_scenario(sms, node_smsc, scenario)
    print(result.line())
    assert_promises(result, scenario)
