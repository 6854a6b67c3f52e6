"""The SMSC simulator: a test and demo tool beside the SMPP library, not part of it.

`smsmta smsc-sim` runs it; test harnesses and benchmarks start it in-process. It speaks
SMPP 3.4 through `smsmta.smpp.session` (Role.SMSC) and shares our reading of the
specification, which is why the suite also runs an SMSC written by others
(tests/independent/). The SMSC itself is in `smsc`, its HTTP control port in `http`.
"""

from smsmta.simulator.smsc import (
    DEFAULT_FAILURE_STATS,
    GARBAGE_KINDS,
    ID_FORMATS,
    RUNTIME_FIELDS,
    STAT_STATES,
    FailureStat,
    OutcomePicker,
    SimulatorConfig,
    Smsc,
    cli_command,
    parse_failure_stats,
    run,
)

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
