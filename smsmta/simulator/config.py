"""The simulator's settings: `SimulatorConfig`, its receipt failure mix and the outcome draw.

What it does: declares every knob of the simulator (the CLI flags of ``smsmta smsc-sim``
map onto `SimulatorConfig`), checks them at construction (ValueError naming the field),
names those that may change at run time (`RUNTIME_FIELDS`) and the garbage kinds
`Smsc.inject_garbage` writes, and draws each accepted message's fate (`OutcomePicker`).

Contract: pure; no I/O, no clock. `OutcomePicker` outcomes are a pure function of (seed,
fail_rate, stats, number of draws).

Touches: nothing.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.constants import MessageState

ID_FORMATS = ("decimal", "hex", "hexstring", "uuid")

#: Annex B stat word -> message_state (SMPP 3.4 5.2.28).
STAT_STATES: Mapping[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}


class FailureStat(NamedTuple):
    """One failure a receipt may carry: Annex B stat, err (0..999) and relative weight."""

    stat: str
    err: int
    weight: float = 1.0


DEFAULT_FAILURE_STATS: tuple[FailureStat, ...] = (
    FailureStat("UNDELIV", 1, 6),
    FailureStat("REJECTD", 2, 2),
    FailureStat("EXPIRED", 3, 2),
)


def parse_failure_stats(text: str) -> tuple[FailureStat, ...]:
    """``"UNDELIV:1:6,REJECTD:2:2"`` -> FailureStats (``STAT[:ERR[:WEIGHT]]``, comma-separated).

    ERR defaults to 1 and WEIGHT to 1. Raises ValueError naming the bad entry.
    """
    stats = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        pieces = entry.split(":")
        if len(pieces) > 3:
            raise ValueError(f"failure stat {entry!r}: expected STAT[:ERR[:WEIGHT]]")
        try:
            err = int(pieces[1]) if len(pieces) > 1 else 1
            weight = float(pieces[2]) if len(pieces) > 2 else 1.0
        except ValueError:
            raise ValueError(f"failure stat {entry!r}: ERR and WEIGHT must be numbers") from None
        stats.append(FailureStat(pieces[0].upper(), err, weight))
    if not stats:
        raise ValueError("no failure stat given")
    return tuple(stats)


#: Fields `Smsc.update_config` (and ``POST /config``) may change while running.
RUNTIME_FIELDS = frozenset(
    {
        "fail_rate",
        "resp_delay_ms",
        "max_tps",
        "max_window",
        "drop_after",
        "dlr_delay_ms",
        "submit_fail_rate",
        "submit_fail_status",
        "receipt_before_resp",
        "answer_nothing",
    }
)

#: What `Smsc.inject_garbage` can write on a live session, and what the ESME should do:
#: bad_length: a header whose command_length is 8 (framing lost: reset the connection);
#: unknown_command: a well-framed PDU with command_id 0x000000AB (answer generic_nack);
#: truncated: a deliver_sm whose body stops inside a field, command_length matching what
#: was sent (framing kept: answer with an error, go on); random: 64 random octets (framing
#: lost when the first four make an impossible length; else a long wait for the rest,
#: which only the ESME's own timers end).
GARBAGE_KINDS = ("bad_length", "unknown_command", "truncated", "random")


def _number(name: str, value: Any, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


def _integer(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    _number(name, value, low, high)


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator does; the CLI flags of ``smsmta smsc-sim`` map onto it.

    Zero disables a limit (`max_binds`, `max_window`, `max_tps`, `drop_after`).
    `control_port` None: no control endpoint; 0: an ephemeral port (see `Smsc.control_port`).
    """

    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "smsmta"
    password: str = "secret"
    #: More accounts, system_id -> password (the one above is always there).
    accounts: Mapping[str, str] = field(default_factory=dict)
    #: Binds per system_id, all types together; 0 = no cap.
    max_binds: int = 0
    id_format: str = "decimal"
    #: With id_format hex: receipts write the id in decimal in their text (receipted_message_id
    #: keeps the hex id), as some providers do.
    receipt_text_id_decimal: bool = False
    dlr_delay_ms: float = 0.0
    #: Share of accepted messages (0..1) whose receipt carries a failure stat.
    fail_rate: float = 0.0
    dlr_failure_stats: tuple[FailureStat, ...] = DEFAULT_FAILURE_STATS
    resp_delay_ms: float = 0.0
    max_window: int = 0
    max_tps: int = 0
    drop_after: int = 0
    #: Share of submits (0..1) answered `submit_fail_status` (a synchronous error).
    submit_fail_rate: float = 0.0
    submit_fail_status: int = S.ESME_RSUBMITFAIL
    #: Send each receipt at submit time, before the submit_sm_resp (dlr_delay_ms ignored).
    receipt_before_resp: bool = False
    #: Accept every submit (message id, receipt, duplicate key) but never send its response.
    answer_nothing: bool = False
    control_host: str | None = None  # None: same as host
    control_port: int | None = None
    #: system_id the SMSC names itself with in bind responses.
    smsc_system_id: str = "SMSCSIM"
    #: Default destination of injected MOs.
    mo_short_code: str = "38000"
    #: Seeds the outcome, submit-failure and UUID generators (None: unpredictable).
    seed: int | None = None
    #: deliver_sm outstanding per receiver connection.
    deliver_window: int = 1000
    deliver_timeout_ms: float = 30_000.0
    deliver_retry_ms: float = 1_000.0
    deliver_max_attempts: int = 10
    max_pending_deliveries: int = 1_000_000
    #: Messages kept for query_sm / cancel_sm / replace_sm (at least this many, at most 2x).
    message_store_size: int = 200_000
    #: Accepted submits remembered for `duplicates` (at least this many, at most 2x).
    duplicate_window: int = 1_000_000
    #: Binds, submit_sm and data_sm kept as field dicts (the last this many; 0: none).
    record_pdus: int = 0

    def __post_init__(self) -> None:
        if self.id_format not in ID_FORMATS:
            raise ValueError(f"id_format must be one of {', '.join(ID_FORMATS)}")
        _integer("port", self.port, 0, 65535)
        if self.control_port is not None:
            _integer("control_port", self.control_port, 0, 65535)
        for name in ("max_binds", "max_window", "max_tps", "drop_after", "record_pdus"):
            _integer(name, getattr(self, name), 0)
        for name in ("fail_rate", "submit_fail_rate"):
            _number(name, getattr(self, name), 0, 1)
        for name in ("dlr_delay_ms", "resp_delay_ms", "deliver_retry_ms"):
            _number(name, getattr(self, name), 0)
        _number("deliver_timeout_ms", self.deliver_timeout_ms, 1)
        _integer("submit_fail_status", self.submit_fail_status, 1, 0xFFFFFFFF)
        for name in ("receipt_before_resp", "answer_nothing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        for name in (
            "deliver_window",
            "deliver_max_attempts",
            "max_pending_deliveries",
            "message_store_size",
            "duplicate_window",
        ):
            _integer(name, getattr(self, name), 1)
        for system_id in (self.system_id, *self.accounts, self.smsc_system_id):
            if not 0 < len(system_id) <= 15:
                raise ValueError(f"system_id {system_id!r} must be 1 to 15 characters")
        for password in (self.password, *self.accounts.values()):
            if len(password) > 8:
                raise ValueError("passwords are at most 8 characters (SMPP 3.4)")
        if not self.dlr_failure_stats:
            raise ValueError("dlr_failure_stats needs at least one stat")
        for stat in self.dlr_failure_stats:
            if stat.stat not in STAT_STATES or stat.stat == "DELIVRD":
                known = ", ".join(s for s in STAT_STATES if s != "DELIVRD")
                raise ValueError(f"failure stat {stat.stat!r} is not one of {known}")
            _integer(f"err of {stat.stat}", stat.err, 0, 999)
            _number(f"weight of {stat.stat}", stat.weight, 0)
        if sum(stat.weight for stat in self.dlr_failure_stats) <= 0:
            raise ValueError("the weights of dlr_failure_stats add up to zero")

    @property
    def credentials(self) -> dict[str, str]:
        """Every account the simulator accepts: system_id -> password."""
        return {**self.accounts, self.system_id: self.password}

    def bind_status(self, system_id: str, password: str, binds: int) -> tuple[int, str]:
        """(0, "") to accept a bind of `system_id` already holding `binds`, else the
        status refusing it and why (unknown system_id, wrong password, max_binds)."""
        expected = self.credentials.get(system_id)
        if expected is None:
            return S.ESME_RINVSYSID, "unknown system_id"
        if password != expected:
            return S.ESME_RINVPASWD, "wrong password"
        if self.max_binds and binds >= self.max_binds:
            return S.ESME_RBINDFAIL, f"max_binds {self.max_binds} reached"
        return S.ESME_ROK, ""

    def runtime(self) -> dict[str, Any]:
        """The fields `RUNTIME_FIELDS` names, with their current values."""
        return {name: getattr(self, name) for name in sorted(RUNTIME_FIELDS)}


class OutcomePicker:
    """Draws each accepted message's fate, one random draw per message, in submit order.

    `pick()` returns 0 for delivered, else 1 + the index of the failure in `stats`: a
    message fails when the draw is under `fail_rate`, and the same draw, scaled, picks the
    failure by weight. So the outcomes are a pure function of (seed, fail_rate, stats, n).
    """

    def __init__(self, fail_rate: float, stats: tuple[FailureStat, ...], seed: Any) -> None:
        self.fail_rate = fail_rate
        self.stats = stats
        self._random = random.Random(seed).random
        total = 0.0
        self._cumulative = []
        for stat in stats:
            total += stat.weight
            self._cumulative.append(total)
        self._total = total
        self._last = len(stats)

    def pick(self) -> int:
        draw = self._random()
        rate = self.fail_rate
        if draw >= rate:
            return 0
        return min(1 + bisect_right(self._cumulative, draw / rate * self._total), self._last)
