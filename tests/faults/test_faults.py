"""Every fault of issue 9 under a steady load: nothing lost, duplicates within the bound.

One stack for the module (`smsmta.testing.fault_stack.fault_stack`: its own PostgreSQL, the
simulator behind a TCP proxy, the four services as subprocesses); each fault runs on a
delivery of its own, with destinations of its own, and drains before the next one.
The promise, per fault: lost == 0; duplicates <= window x connections x children whose
responses the fault may lose; 0 where no response can be lost (throttling, a slow SMSC,
the SMS process, the mid server or the marketing service killed). The table of the run
is printed at the end of the module (pytest -s shows it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smsmta.testing.fault_stack import FaultStack, Sizes, fault_stack
from smsmta.testing.faults import FAULTS, FaultRow, conditions, format_table, run_fault

SIZES = Sizes()
ROWS: list[FaultRow] = []
# network_reset (RST on every link through the proxy) costs what smsc_drops_every_link
# already proves, and the suite has 150 s: bench/faults.py runs it, test_fault_tools
# tests the proxy's reset.
TEST_FAULTS = [name for name in FAULTS if name != "network_reset"]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    tmp_path: Path = tmp_path_factory.mktemp("faults")
    async with fault_stack(tmp_path, SIZES) as running:
        yield running
    if ROWS:
        print("\n" + conditions(SIZES) + "\n" + format_table(ROWS))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", TEST_FAULTS)
async def test_fault_loses_nothing_and_duplicates_within_the_bound(
    stack: FaultStack, name: str
) -> None:
    fault = FAULTS[name]
    row = await run_fault(stack, fault)
    ROWS.append(row)
    summary = format_table([row]) + f"\nstatuses: {row.statuses}"
    assert row.lost == 0, summary
    assert row.failed == 0, summary
    assert row.duplicates <= row.bound, summary
    if fault.loses_responses == "none":
        assert row.duplicates == 0, summary
    assert row.recovery is not None, summary
