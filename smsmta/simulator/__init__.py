"""The SMSC simulator: a test and demo tool beside the SMPP library, not part of it.

`smsmta smsc-sim` runs it; test harnesses and benchmarks start it in-process. It speaks
SMPP 3.4 through `smsmta.smpp.session` (Role.SMSC) and shares our reading of the
specification, which is why the suite also runs an SMSC written by others
(tests/independent/). The SMSC itself (its contract) is in `smsc`; its settings in
`config`, its records and due queues in `state`, the PDUs it builds in `pdus`, one ESME
connection in `connection`, its HTTP control port in `http`, ``smsmta smsc-sim`` in `cli`.
Import the names below from this package, not from its modules, which may move.

Speed (2-vCPU AMD EPYC VM, CPython 3.11, uvloop, `run`'s GC thresholds; pre-encoded
pipelined submit_sm written by a raw-socket client in another process, 300,000 of them):
about 105,000 submit_sm answered per second on one core without receipts (~10 us each:
decode, answer, id, store, duplicate key); with a receipt per submit, acked by the client on
a receiver bind, 40,000 to 50,000 submits per second plus as many receipts (~11 us more
each, about half of it in `Session.send` and the codec). Paced at 40,000/s with receipts
the simulator saturates its core. The hot path is `Connection.data_received` ->
`_on_submit` -> `Smsc._accept_message`, and `_receipts_due` -> `_pump` for receipts.

Why our own: no maintained Python SMSC exists (smpplib is a client only; SMPPSim is
Java and unmaintained; Jasmin's is a full gateway), and a test peer must share the
product's codec and session to exercise them, plus fault knobs no simulator has.
"""

from smsmta.simulator.cli import cli_command, run
from smsmta.simulator.config import (
    DEFAULT_FAILURE_STATS,
    GARBAGE_KINDS,
    ID_FORMATS,
    RUNTIME_FIELDS,
    STAT_STATES,
    FailureStat,
    OutcomePicker,
    SimulatorConfig,
    parse_failure_stats,
)
from smsmta.simulator.smsc import Smsc

__all__ = [
    "DEFAULT_FAILURE_STATS",
    "GARBAGE_KINDS",
    "ID_FORMATS",
    "RUNTIME_FIELDS",
    "STAT_STATES",
    "FailureStat",
    "OutcomePicker",
    "SimulatorConfig",
    "Smsc",
    "cli_command",
    "parse_failure_stats",
    "run",
]
