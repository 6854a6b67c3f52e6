"""An SMSC for tests, benchmarks and the demo: SMPP 3.4 server side, on asyncio.

What it does
    `Smsc` listens for ESME connections and plays the provider: it checks binds against
    its accounts (system_id -> password; ESME_RINVSYSID, ESME_RINVPASWD, ESME_RBINDFAIL past
    `max_binds` per system_id), answers submit_sm and data_sm with a message_id in the
    chosen `id_format` (decimal counter, the same counter as upper-case hex, the decimal
    id's ASCII octets written in hex, or a UUID), answers query_sm / cancel_sm / replace_sm
    from its message store, and sends Annex B delivery receipts (deliver_sm, esm_class 0x04,
    receipted_message_id and message_state TLVs) `dlr_delay_ms` after each submit that asks
    for one, round-robin over the RECEIVER / TRANSCEIVER binds of the same system_id. A
    seeded `OutcomePicker` fails `fail_rate` of the messages with a stat of
    `dlr_failure_stats` (UNDELIV / REJECTD / EXPIRED ...). MOs are injected with
    `inject_mo` or ``POST /mo`` (long ones split by `smsmta.smpp.text.encode_message` with a
    concatenation UDH). Faults for tests: `resp_delay_ms`, `max_window` and `max_tps`
    (ESME_RTHROTTLED 0x58), `submit_fail_rate`, `drop_after` (abort the connection at the
    Nth submit, which gets no answer), `receipt_before_resp`, `answer_nothing` (accept
    every submit and never answer it: the worst case of an MT timeout, where the SMSC took
    the message and only its response is lost); and, at once, `drop_links` (abort every
    connection) and `inject_garbage` (malformed PDUs or raw bytes written on live
    sessions, see `GARBAGE_KINDS`). A small HTTP/1.1 control endpoint
    (`smsmta.simulator.http`: ``GET /stats``, ``GET|POST /config``, ``POST /mo``,
    ``POST /drop_links``, ``POST /garbage``) serves the counters and changes the fault
    knobs at run time, so a simulator in another process can be faulted too.

Contract
    - Protocol rules are `smsmta.smpp.session.Session` (Role.SMSC): enquire_link and unbind are
      answered there, as are PDUs not allowed in the bind state; a malformed PDU is answered
      as SMPP says, counted in ``malformed`` and logged, and the connection is closed only
      when framing is lost. The simulator sends nothing periodic on the wire.
    - Receipts are at least once: a deliver_sm not answered with ESME_ROK when its
      connection drops (or `deliver_timeout_ms` passes) goes out again, first in line, on a
      receiver of the same system_id; a deliver_sm_resp with an error status is re-sent
      after `deliver_retry_ms`, up to `deliver_max_attempts` sends. Deliveries (receipts and
      MOs) wait in a per-system_id queue while no receiver is bound, at most
      `max_pending_deliveries` (the oldest are dropped and counted past it).
    - Throttling: a submit arriving while `max_window` submits of its connection are held
      unanswered (only possible with `resp_delay_ms`) is answered 0x58 at once; so is one
      that would make more than `max_tps` accepted submits of its system_id within one
      second (sliding window). Throttled or failed submits get no message id, no receipt,
      and are not remembered for ``duplicates``.
    - ``duplicates`` counts accepted submit_sm / data_sm whose key
      ``(destination_addr, body, user_message_reference)`` was already seen among the
      previous `duplicate_window` to 2 x `duplicate_window` accepted submits (two
      generations of hashes), across all system_ids. ``body`` is short_message when it is
      not empty, else the message_payload TLV (b"" when neither); user_message_reference
      is the TLV's value, or None when absent. Each part of a long message is its own key.
    - registered_delivery bits 1-0: 1 asks a receipt whatever the outcome, 2 on failure
      only. query_sm answers ENROUTE until the receipt's done time, then the final state;
      cancel_sm (by message_id) and replace_sm succeed only before it (the receipt then
      says DELETED, or previews the new text), else ESME_RCANCELFAIL / ESME_RREPLACEFAIL.
      Only the account that submitted a message can query, cancel or replace it.
      submit_multi is not supported: answered ESME_RINVCMDID in its submit_multi_resp.
    - `receipt_before_resp`: the receipt is made at submit time (dlr_delay_ms ignored) and
      written to a receiver before the submit_sm_resp is queued; on a transceiver it
      precedes the response in the same stream.
    - MOs: an address starting with "+" goes out as TON international / NPI ISDN without
      the "+"; digits as TON unknown / NPI ISDN; anything else as alphanumeric.
    - Error responses carry an empty body field (a lone NUL for message_id / system_id),
      as most SMSCs do; SMPP 3.4 also allows leaving the body out.
    - Timers: no asyncio handle per message. Delayed responses, due receipts and retries
      each sit in a FIFO (`_DueQueue`) drained in batches by one timer armed for its head;
      a connection's output is written once per read and once per drain. A 1 s
      housekeeping timer re-queues deliver_sm past `deliver_timeout_ms`.
    - Time: loop.time() for every delay and for the tps window; receipt dates are UTC.
    - `record_pdus` N > 0 keeps the last N binds, submit_sm and data_sm as field dicts
      (`Smsc.recorded`, ``GET /recorded``): every body field and TLV as received (octet
      strings in hex, the bind's password masked), the status answered and the message id
      given; so end-to-end tests can assert what went on the wire.

Speed (2-vCPU AMD EPYC VM, CPython 3.11, uvloop, `run`'s GC thresholds; pre-encoded
pipelined submit_sm written by a raw-socket client in another process, 300,000 of them):
about 105,000 submit_sm answered per second on one core without receipts (~10 us each:
decode, answer, id, store, duplicate key); with a receipt per submit, acked by the client on
a receiver bind, 40,000 to 50,000 submits per second plus as many receipts (~11 us more
each, about half of it in `Session.send` and the codec). Paced at 40,000/s with receipts
the simulator saturates its core. The hot path is `_Connection.data_received` ->
`_on_submit` -> `Smsc._accept_message`, and `_receipts_due` -> `_pump` for receipts.

Why our own: no maintained Python SMSC exists (smpplib is a client only; SMPPSim is
Java and unmaintained; Jasmin's is a full gateway), and a test peer must share the
product's codec and session to exercise them, plus fault knobs no simulator has.

Touches: listening TCP sockets (SMPP and, when `control_port` is set, the HTTP control
endpoint), the asyncio loop's timers, structlog (events: bind_accepted, bind_refused,
connection_closed, malformed_pdu; passwords are never logged). Not the database, not the
filesystem. The CLI (`cli_command`, ``smsmta smsc-sim``) also installs SIGINT/SIGTERM
handlers and runs uvloop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import signal
import struct
import time
import uuid
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import click
import structlog

from smsmta.smpp.constants import CommandId, EsmClass, MessageState, Npi, Tag, Ton, status_name
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsmta.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    DeliverSm,
    Pdu,
    QuerySm,
    ReplaceSm,
    SubmitMulti,
    SubmitSm,
    Unbind,
)
from smsmta.smpp.session import NEED_DATA, Rejected, Response, Role, Session, Stray, Timeouts
from smsmta.smpp.text import DEFAULT_MAPPING, decode_short_message, encode_message

__all__ = [
    "DEFAULT_FAILURE_STATS",
    "GARBAGE_KINDS",
    "ID_FORMATS",
    "RUNTIME_FIELDS",
    "FailureStat",
    "OutcomePicker",
    "SimulatorConfig",
    "Smsc",
    "cli_command",
    "parse_failure_stats",
    "run",
]

log = structlog.get_logger("smpp.simulator")

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
_GARBAGE_SEQUENCE = 0x7FFFFF00  # far above what our sessions number their own requests


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


# --------------------------------------------------------------------------------------------
# Internal records
# --------------------------------------------------------------------------------------------


class _DueQueue:
    """Items due at a time, drained in batches by one timer armed for the head.

    Push order is due order because each queue's delay is constant; after a run-time
    change of that delay a later item due earlier waits for the ones pushed before it.
    The timer fires no sooner than `resolution` after being armed, so a steady stream of
    items is drained about once per `resolution`, never once per item.
    """

    __slots__ = ("_drain", "_handle", "_items", "_loop", "_resolution")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        drain: Callable[[list[Any], float], None],
        resolution: float = 0.001,
    ) -> None:
        self._loop = loop
        self._drain = drain
        self._resolution = resolution
        self._items: deque[tuple[float, Any]] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._items)

    def push(self, due: float, item: Any) -> None:
        self._items.append((due, item))
        if self._handle is None:
            self._arm(due)

    def _arm(self, due: float) -> None:
        loop = self._loop
        self._handle = loop.call_at(max(due, loop.time() + self._resolution), self._fire)

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time()
        items = self._items
        batch = []
        while items and items[0][0] <= now:
            batch.append(items.popleft()[1])
        try:
            if batch:
                self._drain(batch, now)
        finally:
            if items and self._handle is None:
                self._arm(items[0][0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._items.clear()


class _Message:
    """An accepted submit_sm / data_sm: what query_sm, cancel_sm and its receipt need."""

    __slots__ = (
        "account",
        "body",
        "cancelled",
        "done",
        "message_id",
        "outcome",
        "pdu",
        "submitted",
    )

    def __init__(
        self,
        message_id: str,
        account: _Account,
        pdu: Pdu,
        body: bytes,
        submitted: float,
        done: float,
        outcome: int,
    ) -> None:
        self.message_id = message_id
        self.account = account
        self.pdu = pdu
        self.body = body
        self.submitted = submitted
        self.done = done  # loop time at which the message reaches its final state
        self.outcome = outcome
        self.cancelled = False


class _Delivery:
    """A deliver_sm to hand to a receiver: a receipt (built when first sent) or an MO."""

    __slots__ = ("account", "attempts", "message", "pdu")

    def __init__(self, account: _Account, pdu: Pdu | None, message: _Message | None) -> None:
        self.account = account
        self.pdu = pdu  # None for a receipt not sent yet
        self.message = message  # None for an MO
        self.attempts = 0  # times sent


class _Account:
    """One system_id: its connections, its receivers and the deliveries waiting for them."""

    __slots__ = ("connections", "outbox", "receivers", "rr", "system_id", "tps")

    def __init__(self, system_id: str) -> None:
        self.system_id = system_id
        self.connections: set[_Connection] = set()
        self.receivers: list[_Connection] = []
        self.outbox: deque[_Delivery] = deque()
        self.rr = 0
        self.tps: deque[float] = deque()

    def detach(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if conn in self.receivers:
            self.receivers.remove(conn)


class _Counters:
    """Plain int attributes: an increment is one attribute store on the hot path."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.binds_total = 0
        self.binds_refused = 0
        self.unbinds = 0
        self.submit_sm = 0
        self.submit_sm_by_status: Counter[int] = Counter()
        self.data_sm = 0
        self.data_sm_by_status: Counter[int] = Counter()
        self.query_sm = 0
        self.cancel_sm = 0
        self.replace_sm = 0
        self.submit_multi = 0
        self.accepted = 0
        self.duplicates = 0
        self.throttled_window = 0
        self.throttled_tps = 0
        self.receipts_generated = 0
        self.deliver_sm_sent = 0
        self.deliver_sm_acked = 0
        self.deliver_sm_resent = 0
        self.deliver_sm_errors = 0
        self.deliver_sm_expired = 0
        self.deliver_sm_dropped = 0
        self.mo_injected = 0
        self.mo_sent = 0
        self.dropped_connections = 0
        self.links_dropped = 0
        self.responses_withheld = 0
        self.garbage_injected = 0
        self.malformed = 0
        self.rejected = 0
        self.stray_responses = 0


_BIND_KINDS = {
    CommandId.bind_transmitter: "tx",
    CommandId.bind_receiver: "rx",
    CommandId.bind_transceiver: "trx",
}

# Characters an Annex B "Text:" preview keeps: the same code in ASCII and in GSM 03.38.
_PREVIEW_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !\"#%&'()*+,-./:;<=>?"
)

# The same, as a bytes.translate table: every other octet becomes "?".
_PREVIEW_TABLE = bytes(octet if chr(octet) in _PREVIEW_SAFE else 0x3F for octet in range(256))
_ONE_OCTET_CODINGS = frozenset({0, 1, 3})  # GSM7 unpacked, IA5, Latin-1

# TLV tags as plain ints on the hot path: hashing an IntEnum member runs Enum.__hash__ in
# Python (0.4 us), and the codec looks every tag up in a dict.
_MESSAGE_PAYLOAD = int(Tag.message_payload)
_MESSAGE_STATE = int(Tag.message_state)
_NETWORK_ERROR_CODE = int(Tag.network_error_code)
_RECEIPTED_MESSAGE_ID = int(Tag.receipted_message_id)
_USER_MESSAGE_REFERENCE = int(Tag.user_message_reference)


def _preview(body: bytes, data_coding: int, esm_class: int) -> bytes:
    """The first 20 characters of an MT for a receipt's ``Text:``, in ASCII = GSM 03.38."""
    if data_coding in _ONE_OCTET_CODINGS and not esm_class & EsmClass.UDHI:
        head = body[:20]
        if 0x1B not in head:  # no GSM escape: one octet is one character
            return head.translate(_PREVIEW_TABLE)
    try:
        udhi = bool(esm_class & EsmClass.UDHI)
        text = decode_short_message(body, data_coding, udhi=udhi).text
    except ValueError:
        return b""
    return "".join(ch if ch in _PREVIEW_SAFE else "?" for ch in text[:20]).encode("ascii")


class _Outcome(NamedTuple):
    """A message's fate, with the receipt pieces it implies, computed once."""

    stat: str
    err: int
    state: MessageState
    dlvrd: bytes  # the Annex B text between the id and the submit date
    stat_err: bytes  # the Annex B text between the done date and the Text: preview
    tlvs: tuple[tuple[int, Any], ...]  # message_state (+ network_error_code on failure)

    @classmethod
    def of(cls, stat: str, err: int) -> _Outcome:
        state = STAT_STATES[stat]
        delivered = state == MessageState.DELIVERED
        tlvs: tuple[tuple[int, Any], ...] = ((_MESSAGE_STATE, int(state)),)
        if not delivered:  # network type 3 (GSM), then the error code on two octets
            tlvs += ((_NETWORK_ERROR_CODE, bytes((3, err >> 8, err & 0xFF))),)
        return cls(
            stat,
            err,
            state,
            f" sub:001 dlvrd:{'001' if delivered else '000'} submit date:".encode(),
            f" stat:{stat} err:{err:03d} Text:".encode(),
            tlvs,
        )


_DELIVERED = _Outcome.of("DELIVRD", 0)
_CANCELLED = _Outcome.of("DELETED", 0)

_MO_ENCODINGS = {0: "gsm7", 1: "ascii", 3: "latin1", 8: "ucs2"}


def _address(address: str) -> tuple[int, int, str]:
    """TON, NPI and digits of an MO address: ``+33...`` is international E.164."""
    if address.startswith("+"):
        return Ton.INTERNATIONAL, Npi.ISDN, address[1:]
    if address.isdigit():
        return Ton.UNKNOWN, Npi.ISDN, address
    return Ton.ALPHANUMERIC, Npi.UNKNOWN, address


# --------------------------------------------------------------------------------------------
# One SMPP connection
# --------------------------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_json_ready(item) for item in value]
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


def recorded_pdu(pdu: Pdu, status: int) -> dict[str, Any]:
    """A request as `record_pdus` keeps it: its fields by name, JSON-ready."""
    fields = pdu.asdict()
    tlvs = fields.pop("tlvs", ())
    record: dict[str, Any] = {"pdu": pdu.COMMAND_ID.name.lower(), "status": status}
    for name, value in fields.items():
        if name in ("command_id", "command_status", "sequence_number"):
            continue
        record[name] = "********" if name == "password" else _json_ready(value)
    record["tlvs"] = {f"0x{tag:04X}": _json_ready(value) for tag, value in tlvs}
    return record


class _Connection(asyncio.Protocol):
    """One ESME connection: a Session(Role.SMSC) between the socket and the `Smsc`."""

    def __init__(self, smsc: Smsc) -> None:
        self.smsc = smsc
        config = smsc.config
        self.session = Session(
            Role.SMSC,
            window=config.deliver_window,
            timeouts=Timeouts(
                response=config.deliver_timeout_ms / 1000,
                bind=30.0,
                enquire_link_period=0.0,  # the simulator sends nothing periodic
                unbind=5.0,
            ),
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.account: _Account | None = None
        self.kind: str | None = None  # tx | rx | trx once bound
        self.closed = False
        self.paused = False  # our output is backed up: send it no deliver_sm
        self.submits = 0  # submit_sm + data_sm received, for drop_after
        self.unanswered = 0  # accepted submits whose (delayed) response is not sent yet
        self.close_reason: str | None = None

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.smsc._connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.smsc._connection_lost(self, exc)

    def pause_writing(self) -> None:
        # Back-pressure: no deliver_sm for it, and no more submits taken from it. A
        # receiver keeps being read: its deliver_sm_resp are what frees its window.
        self.paused = True
        if self.transport is not None and not self.closed and self.kind != "rx":
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            if self.kind != "rx":
                self.transport.resume_reading()
            if self.account is not None and self in self.account.receivers:
                self.smsc._pump(self.account, self.smsc._loop_time())

    def data_received(self, data: bytes) -> None:
        smsc = self.smsc
        now = smsc._loop_time()
        session = self.session
        session.receive_data(data, now)
        handlers = _HANDLERS
        while not self.closed:
            try:
                event = session.next_event()
            except RemoteProtocolError as error:
                smsc._malformed(self, error)
                if error.framing_lost:
                    self.flush()
                    self.close("framing lost")
                    return
                continue
            if event is NEED_DATA:
                break
            handler = handlers.get(event.__class__)
            if handler is not None:
                handler(self, event, now)
        if not self.closed:
            self.flush()
            account = self.account
            if account is not None and account.outbox and self in account.receivers:
                smsc._pump(account, now)

    # --- output and closing ----------------------------------------------------------

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self, reason: str) -> None:
        """Close after writing what is buffered."""
        if not self.closed:
            self.closed = True
            self.smsc._detach(self)
            self.close_reason = reason
            self.transport.close()  # type: ignore[union-attr]

    def abort(self, reason: str) -> None:
        """Close at once, dropping what is buffered (no unbind)."""
        if not self.closed:
            self.closed = True
            self.smsc._detach(self)
            self.close_reason = reason
            self.transport.abort()  # type: ignore[union-attr]

    # --- requests from the ESME ------------------------------------------------------

    def _on_bind(self, pdu: Pdu, now: float) -> None:
        smsc = self.smsc
        kind = _BIND_KINDS[pdu.command_id]
        status, why = smsc._check_bind(pdu)
        if smsc.config.record_pdus:
            smsc.recorded.append(recorded_pdu(pdu, status))
        if status:
            smsc.counters.binds_refused += 1
            self.session.send(pdu.make_resp(command_status=status), now)
            log.warning(
                "bind_refused",
                system_id=pdu.system_id,
                bind=kind,
                peer=self.peer,
                status=status_name(status),
                reason=why,
            )
            return
        self.session.send(
            pdu.make_resp(
                system_id=smsc.config.smsc_system_id,
                tlvs=((Tag.sc_interface_version, 0x34),),
            ),
            now,
        )
        smsc._bound(self, pdu.system_id, kind)
        log.info("bind_accepted", system_id=pdu.system_id, bind=kind, peer=self.peer)

    def _on_submit_sm(self, pdu: Pdu, now: float) -> None:
        counters = self.smsc.counters
        counters.submit_sm += 1
        body = pdu.short_message or pdu.tlv(_MESSAGE_PAYLOAD, b"")
        self._on_submit(pdu, body, now, counters.submit_sm_by_status)

    def _on_data_sm(self, pdu: Pdu, now: float) -> None:
        counters = self.smsc.counters
        counters.data_sm += 1
        self._on_submit(pdu, pdu.tlv(_MESSAGE_PAYLOAD, b""), now, counters.data_sm_by_status)

    def _on_submit(self, pdu: Pdu, body: bytes, now: float, by_status: Counter[int]) -> None:
        smsc = self.smsc
        config = smsc.config
        self.submits += 1
        if config.drop_after and self.submits >= config.drop_after:
            smsc.counters.dropped_connections += 1
            self.flush()  # the submits before this one keep their answers
            self.abort(f"drop_after {config.drop_after}")
            return
        status = smsc._admit(self, pdu, now)
        if smsc.on_submit is not None:
            smsc.on_submit(pdu, now, status)
        record = recorded_pdu(pdu, status) if config.record_pdus else None
        if record is not None:
            smsc.recorded.append(record)
        if status:
            by_status[status] += 1
            self.session.send(pdu.make_resp(command_status=status), now)
            return
        by_status[0] += 1
        message = smsc._accept_message(self, pdu, body, now)
        if record is not None:
            record["message_id"] = message.message_id
        if config.answer_nothing:
            smsc.counters.responses_withheld += 1
            return
        response = pdu.make_resp(message_id=message.message_id)
        if config.resp_delay_ms > 0:
            self.unanswered += 1
            smsc._responses.push(now + config.resp_delay_ms / 1000, (self, response))
        else:
            self.session.send(response, now)

    def _on_query_sm(self, pdu: Pdu, now: float) -> None:
        smsc = self.smsc
        smsc.counters.query_sm += 1
        message = smsc._find(pdu.message_id, self.account)
        if message is None:
            response = pdu.make_resp(command_status=S.ESME_RQUERYFAIL, message_id=pdu.message_id)
        else:
            state, err = smsc._state(message, now)
            final = state is not MessageState.ENROUTE
            response = pdu.make_resp(
                message_id=message.message_id,
                final_date=smsc._smpp_time(message.done) if final else "",
                message_state=state,
                error_code=min(err, 255),
            )
        self.session.send(response, now)

    def _on_cancel_sm(self, pdu: Pdu, now: float) -> None:
        smsc = self.smsc
        smsc.counters.cancel_sm += 1
        message = smsc._find(pdu.message_id, self.account) if pdu.message_id else None
        if message is None or message.cancelled or now >= message.done:
            self.session.send(pdu.make_resp(command_status=S.ESME_RCANCELFAIL), now)
            return
        message.cancelled = True  # its receipt, if any, will say DELETED
        self.session.send(pdu.make_resp(), now)

    def _on_replace_sm(self, pdu: Pdu, now: float) -> None:
        smsc = self.smsc
        smsc.counters.replace_sm += 1
        message = smsc._find(pdu.message_id, self.account)
        if message is None or message.cancelled or now >= message.done:
            self.session.send(pdu.make_resp(command_status=S.ESME_RREPLACEFAIL), now)
            return
        message.body = pdu.short_message
        self.session.send(pdu.make_resp(), now)

    def _on_submit_multi(self, pdu: Pdu, now: float) -> None:
        # Not supported: answered with its own _resp, ESME_RINVCMDID (no message id).
        self.smsc.counters.submit_multi += 1
        self.session.send(pdu.make_resp(command_status=S.ESME_RINVCMDID), now)

    def _on_unbind(self, pdu: Pdu, now: float) -> None:
        # The session queued unbind_resp and is closed: send it, then close the socket.
        self.smsc.counters.unbinds += 1
        self.flush()
        self.close("unbind")

    def _on_response(self, event: Response, now: float) -> None:
        delivery = event.context
        if event.request != CommandId.deliver_sm or delivery is None:
            return
        smsc = self.smsc
        pdu = event.pdu
        if pdu.command_status == S.ESME_ROK and pdu.command_id == CommandId.deliver_sm_resp:
            smsc.counters.deliver_sm_acked += 1
            return
        smsc.counters.deliver_sm_errors += 1
        smsc._retry(delivery, now, f"deliver_sm answered {status_name(pdu.command_status)}")

    def _on_rejected(self, event: Rejected, now: float) -> None:
        self.smsc.counters.rejected += 1

    def _on_stray(self, event: Stray, now: float) -> None:
        self.smsc.counters.stray_responses += 1


_HANDLERS: dict[type, Callable[[_Connection, Any, float], None]] = {
    SubmitSm: _Connection._on_submit_sm,
    DataSm: _Connection._on_data_sm,
    BindTransmitter: _Connection._on_bind,
    BindReceiver: _Connection._on_bind,
    BindTransceiver: _Connection._on_bind,
    QuerySm: _Connection._on_query_sm,
    CancelSm: _Connection._on_cancel_sm,
    ReplaceSm: _Connection._on_replace_sm,
    SubmitMulti: _Connection._on_submit_multi,
    Unbind: _Connection._on_unbind,
    Response: _Connection._on_response,
    Rejected: _Connection._on_rejected,
    Stray: _Connection._on_stray,
}


# --------------------------------------------------------------------------------------------
# The SMSC
# --------------------------------------------------------------------------------------------


class Smsc:
    """The simulated SMSC. ``async with Smsc(config) as sim: ...`` or start() / stop().

    After `start`: `port` and `control_port` are the ports actually bound (config 0 means
    ephemeral); `stats` is a JSON-ready snapshot of the counters (the ``GET /stats`` body).
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.counters = _Counters()
        #: Tests may watch every submit: called with (pdu, loop time, status answered).
        self.on_submit: Callable[[Pdu, float, int], None] | None = None
        #: The last `record_pdus` binds and submits, as `recorded_pdu` makes them.
        self.recorded: deque[dict[str, Any]] = deque(maxlen=self.config.record_pdus)
        seed = self.config.seed
        self._picker = OutcomePicker(self.config.fail_rate, self.config.dlr_failure_stats, seed)
        self._submit_random = random.Random(None if seed is None else f"{seed}/submit").random
        self._id_random = random.Random(None if seed is None else f"{seed}/id")
        self._garbage_random = random.Random(None if seed is None else f"{seed}/garbage")
        self._garbage_sequence = _GARBAGE_SEQUENCE
        self._outcomes = (
            _DELIVERED,
            *(_Outcome.of(s.stat, s.err) for s in self.config.dlr_failure_stats),
        )
        self._make_id = getattr(self, f"_id_{self.config.id_format}")
        self._next_id = 0
        self._accounts: dict[str, _Account] = {}
        self._connections: set[_Connection] = set()
        self._store: dict[str, _Message] = {}
        self._store_old: dict[str, _Message] = {}
        self._seen: set[int] = set()
        self._seen_old: set[int] = set()
        self._mo_reference = 0
        self._date_minute = -1
        self._date_text = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._port: int | None = None
        self._control_port: int | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._wall_offset = 0.0
        self._loop_time: Callable[[], float] = time.monotonic  # the loop's clock once started

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> Smsc:
        """Listen on `config.host:port` (and the control port when set)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        loop = self._loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self._wall_offset = time.time() - loop.time()
        self._responses = _DueQueue(loop, self._send_responses)
        self._receipts = _DueQueue(loop, self._receipts_due)
        self._retries = _DueQueue(loop, self._retries_due)
        config = self.config
        self._server = await loop.create_server(
            lambda: _Connection(self), config.host, config.port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]
        if config.control_port is not None:
            from smsmta.simulator.http import start_control_server

            try:
                self._control = await start_control_server(
                    self, config.control_host or config.host, config.control_port
                )
            except BaseException:
                self._server.close()
                self._server = None
                raise
            self._control_port = self._control.sockets[0].getsockname()[1]
        self._housekeeping = loop.call_later(1.0, self._tick)
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection (no unbind is sent)."""
        if self._server is None:
            return
        server, control = self._server, self._control
        self._server = self._control = None
        server.close()
        if control is not None:
            control.close()
        for conn in list(self._connections):
            conn.close("simulator stopped")
        for queue in (self._responses, self._receipts, self._retries):
            queue.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        await server.wait_closed()
        if control is not None:
            await control.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run

    async def __aenter__(self) -> Smsc:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The SMPP port listened on."""
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def control_port(self) -> int | None:
        """The HTTP control port listened on, or None when there is no control endpoint."""
        return self._control_port

    # --- run-time control ------------------------------------------------------------

    def update_config(self, **changes: Any) -> dict[str, Any]:
        """Change fields of `RUNTIME_FIELDS` while running; return their new values.

        Raises ValueError naming an unknown field or a bad value (nothing is changed then).
        New values apply to submits received from now on.
        """
        unknown = set(changes) - RUNTIME_FIELDS
        if unknown:
            raise ValueError(
                f"cannot change {', '.join(sorted(unknown))} at run time; "
                f"allowed: {', '.join(sorted(RUNTIME_FIELDS))}"
            )
        self.config = dataclasses.replace(self.config, **changes)
        self._picker.fail_rate = self.config.fail_rate
        return self.config.runtime()

    @property
    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the counters: the body of ``GET /stats``.

        Counters since start: connections_total, binds_total / binds_refused, unbinds;
        submit_sm / data_sm received and their answers by status name (*_by_status);
        query_sm, cancel_sm, replace_sm, submit_multi received; accepted (message ids
        given); duplicates (see the module docstring); throttled = throttled_window +
        throttled_tps; receipts_generated; deliver_sm_sent (every write, re-sends
        included), deliver_sm_acked (ESME_ROK answers), deliver_sm_resent, deliver_sm_errors
        (error answers), deliver_sm_expired (no answer in time), deliver_sm_dropped (queue
        bound or attempts exhausted); mo_injected (messages), mo_sent (first sends of MO
        parts); dropped_connections (drop_after), links_dropped (`drop_links`),
        responses_withheld (`answer_nothing`), garbage_injected (connections
        `inject_garbage` wrote on), malformed, rejected (answered by the
        session: wrong bind state or command), stray_responses. Gauges: connections,
        binds_active {tx, rx, trx}, responses_delayed, receipts_scheduled (waiting for
        dlr_delay_ms), receipts_pending (deliveries, receipts and MOs, waiting for a
        receiver's window), deliver_sm_in_flight (sent, not answered),
        deliver_sm_retry_scheduled.
        """
        c = self.counters
        active = {"tx": 0, "rx": 0, "trx": 0}
        in_flight = 0
        for conn in self._connections:
            if conn.kind is not None and not conn.closed:
                active[conn.kind] += 1
                in_flight += conn.session.outstanding if conn.kind != "tx" else 0
        pending = sum(len(account.outbox) for account in self._accounts.values())
        by_status = {status_name(k): v for k, v in sorted(c.submit_sm_by_status.items())}
        data_by_status = {status_name(k): v for k, v in sorted(c.data_sm_by_status.items())}
        started = self._server is not None
        return {
            "connections": len(self._connections),
            "connections_total": c.connections_total,
            "binds_total": c.binds_total,
            "binds_refused": c.binds_refused,
            "binds_active": active,
            "unbinds": c.unbinds,
            "submit_sm": c.submit_sm,
            "submit_sm_by_status": by_status,
            "data_sm": c.data_sm,
            "data_sm_by_status": data_by_status,
            "query_sm": c.query_sm,
            "cancel_sm": c.cancel_sm,
            "replace_sm": c.replace_sm,
            "submit_multi": c.submit_multi,
            "accepted": c.accepted,
            "duplicates": c.duplicates,
            "throttled": c.throttled_window + c.throttled_tps,
            "throttled_window": c.throttled_window,
            "throttled_tps": c.throttled_tps,
            "responses_delayed": len(self._responses) if started else 0,
            "receipts_scheduled": len(self._receipts) if started else 0,
            "receipts_generated": c.receipts_generated,
            "receipts_pending": pending,
            "deliver_sm_in_flight": in_flight,
            "deliver_sm_retry_scheduled": len(self._retries) if started else 0,
            "deliver_sm_sent": c.deliver_sm_sent,
            "deliver_sm_acked": c.deliver_sm_acked,
            "deliver_sm_resent": c.deliver_sm_resent,
            "deliver_sm_errors": c.deliver_sm_errors,
            "deliver_sm_expired": c.deliver_sm_expired,
            "deliver_sm_dropped": c.deliver_sm_dropped,
            "mo_injected": c.mo_injected,
            "mo_sent": c.mo_sent,
            "dropped_connections": c.dropped_connections,
            "links_dropped": c.links_dropped,
            "responses_withheld": c.responses_withheld,
            "garbage_injected": c.garbage_injected,
            "malformed": c.malformed,
            "rejected": c.rejected,
            "stray_responses": c.stray_responses,
        }

    def drop_links(self) -> int:
        """Abort every connection now, bound or not, without unbind; return how many.

        What the ESMEs see is a reset: the responses and receipts not written yet are
        lost (receipts not answered go out again on the next receiver, as always).
        """
        connections = [conn for conn in self._connections if not conn.closed]
        for conn in connections:
            conn.abort("drop_links")
        self.counters.links_dropped += len(connections)
        if connections:
            log.info("links_dropped", connections=len(connections))
        return len(connections)

    def inject_garbage(self, kind: str, binds: tuple[str, ...] = ("tx", "rx", "trx")) -> int:
        """Write one piece of `kind` (see `GARBAGE_KINDS`) on every live bind of `binds`.

        Written between two whole PDUs of the stream, so what follows is well framed again
        for an ESME that kept its framing. Returns the number of connections written on.
        Raises ValueError naming a bad kind or bind type.
        """
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"garbage kind {kind!r} is not one of {', '.join(GARBAGE_KINDS)}")
        bad = set(binds) - set(_BIND_KINDS.values())
        if bad or not binds:
            raise ValueError(f"binds must be some of tx, rx, trx; got {sorted(binds)!r}")
        written = 0
        for conn in list(self._connections):
            if conn.closed or conn.kind not in binds or conn.transport is None:
                continue
            conn.flush()  # what the session holds goes first: the garbage lands between PDUs
            conn.transport.write(self._garbage(kind))
            written += 1
        self.counters.garbage_injected += written
        log.info("garbage_injected", kind=kind, connections=written)
        return written

    def _garbage(self, kind: str) -> bytes:
        self._garbage_sequence += 1
        sequence = self._garbage_sequence
        if kind == "bad_length":
            return struct.pack(">IIII", 8, CommandId.deliver_sm, 0, sequence)
        if kind == "unknown_command":
            return struct.pack(">IIII", 16, 0x000000AB, 0, sequence)
        if kind == "truncated":
            # service_type "", source_addr TON/NPI, then source_addr without its NUL: the
            # body ends inside a C-octet string.
            body = b"\x00\x01\x01+3361234"
            return struct.pack(">IIII", 16 + len(body), CommandId.deliver_sm, 0, sequence) + body
        return self._garbage_random.randbytes(64)

    async def inject_mo(
        self,
        source: str,
        destination: str | None = None,
        text: str = "",
        data_coding: int | None = None,
        *,
        system_id: str | None = None,
    ) -> int:
        """Queue an MO for the receivers of `system_id` (default: config.system_id).

        `destination` defaults to config.mo_short_code. `data_coding` None picks GSM7 (0),
        else UCS-2 (8); 0, 1, 3 or 8 force GSM7, IA5, Latin-1 or UCS-2. A text longer than
        one SMS goes in several deliver_sm with a concatenation UDH (esm_class 0x40).
        Returns the number of deliver_sm queued. Raises ValueError for a bad argument.
        """
        return self.queue_mo(source, destination, text, data_coding, system_id=system_id)

    def queue_mo(
        self,
        source: str,
        destination: str | None = None,
        text: str = "",
        data_coding: int | None = None,
        *,
        system_id: str | None = None,
    ) -> int:
        """`inject_mo` without the await (used by the control endpoint)."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        config = self.config
        system_id = config.system_id if system_id is None else system_id
        if system_id not in config.credentials:
            raise ValueError(f"unknown system_id {system_id!r}")
        destination = config.mo_short_code if destination is None else destination
        if not isinstance(source, str) or not isinstance(destination, str):
            raise ValueError("source and destination must be strings")
        if not isinstance(text, str):
            raise ValueError("text must be a string")
        source_ton, source_npi, source_addr = _address(source)
        dest_ton, dest_npi, dest_addr = _address(destination)
        for name, value in (("source", source_addr), ("destination", dest_addr)):
            if not 0 < len(value) <= 20:
                raise ValueError(f"{name} address must be 1 to 20 characters, got {value!r}")
        if data_coding is None:
            mapping = DEFAULT_MAPPING
        elif type(data_coding) is int and data_coding in _MO_ENCODINGS:
            mapping = ((data_coding, _MO_ENCODINGS[data_coding]),)
        else:
            raise ValueError(
                f"data_coding must be one of {sorted(_MO_ENCODINGS)}, not {data_coding!r}"
            )
        encoded = encode_message(text, mapping, reference=self._mo_reference)
        self._mo_reference = (self._mo_reference + 1) % 256
        esm_class = EsmClass.UDHI if encoded.udh else 0
        account = self._account(system_id)
        for part in encoded.parts:
            pdu = DeliverSm(
                source_addr_ton=source_ton,
                source_addr_npi=source_npi,
                source_addr=source_addr,
                dest_addr_ton=dest_ton,
                dest_addr_npi=dest_npi,
                destination_addr=dest_addr,
                esm_class=esm_class,
                data_coding=encoded.data_coding,
                short_message=part,
            )
            self._enqueue(account, _Delivery(account, pdu, None))
        self.counters.mo_injected += 1
        self._pump(account, self._loop_time())
        return len(encoded.parts)

    # --- binds and connections -------------------------------------------------------

    def _account(self, system_id: str) -> _Account:
        account = self._accounts.get(system_id)
        if account is None:
            account = self._accounts[system_id] = _Account(system_id)
        return account

    def _check_bind(self, pdu: Pdu) -> tuple[int, str]:
        config = self.config
        expected = config.credentials.get(pdu.system_id)
        if expected is None:
            return S.ESME_RINVSYSID, "unknown system_id"
        if pdu.password != expected:
            return S.ESME_RINVPASWD, "wrong password"
        account = self._accounts.get(pdu.system_id)
        if (
            config.max_binds
            and account is not None
            and len(account.connections) >= config.max_binds
        ):
            return S.ESME_RBINDFAIL, f"max_binds {config.max_binds} reached"
        return S.ESME_ROK, ""

    def _bound(self, conn: _Connection, system_id: str, kind: str) -> None:
        account = self._account(system_id)
        conn.account, conn.kind = account, kind
        account.connections.add(conn)
        self.counters.binds_total += 1
        if kind != "tx":
            account.receivers.append(conn)
            if account.outbox:
                self._pump(account, self._loop_time())

    def _connection_made(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self.counters.connections_total += 1

    def _detach(self, conn: _Connection) -> None:
        if conn.account is not None:
            conn.account.detach(conn)

    def _connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        reason = conn.close_reason or (str(exc) if exc else "closed by peer")
        conn.closed = True
        self._connections.discard(conn)
        account = conn.account
        if account is not None:
            account.detach(conn)
            unacked = [
                e.context
                for e in conn.session.abandon()
                if e.request == CommandId.deliver_sm and e.context is not None
            ]
            if unacked:  # at least once: first in line for the next receiver
                account.outbox.extendleft(reversed(unacked))
                if self._server is not None:
                    self._pump(account, self._loop_time())
        log.info(
            "connection_closed",
            peer=conn.peer,
            system_id=account.system_id if account is not None else None,
            bind=conn.kind,
            reason=reason,
        )

    def _malformed(self, conn: _Connection, error: RemoteProtocolError) -> None:
        self.counters.malformed += 1
        log.warning(
            "malformed_pdu",
            peer=conn.peer,
            system_id=conn.account.system_id if conn.account is not None else None,
            error=str(error),
            status=status_name(error.command_status),
            command_id=None if error.command_id is None else f"0x{error.command_id:08X}",
            sequence_number=error.sequence_number,
            framing_lost=error.framing_lost,
        )

    # --- submits ---------------------------------------------------------------------

    def _admit(self, conn: _Connection, pdu: Pdu, now: float) -> int:
        """0, or the status refusing this submit (throttling, failure, bad destination)."""
        config = self.config
        if config.max_window and conn.unanswered >= config.max_window:
            self.counters.throttled_window += 1
            return S.ESME_RTHROTTLED
        max_tps = config.max_tps
        if max_tps:
            stamps = conn.account.tps  # type: ignore[union-attr]
            horizon = now - 1.0
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
            if len(stamps) >= max_tps:
                self.counters.throttled_tps += 1
                return S.ESME_RTHROTTLED
            stamps.append(now)
        if config.submit_fail_rate and self._submit_random() < config.submit_fail_rate:
            return config.submit_fail_status
        if not pdu.destination_addr:
            return S.ESME_RINVDSTADR
        return S.ESME_ROK

    def _id_decimal(self, n: int) -> str:
        return str(n)

    def _id_hex(self, n: int) -> str:
        return f"{n:X}"

    def _id_hexstring(self, n: int) -> str:
        return str(n).encode().hex()

    def _id_uuid(self, n: int) -> str:
        return str(uuid.UUID(int=self._id_random.getrandbits(128), version=4))

    def _accept_message(self, conn: _Connection, pdu: Pdu, body: bytes, now: float) -> _Message:
        config = self.config
        counters = self.counters
        counters.accepted += 1
        self._next_id += 1
        message_id = self._make_id(self._next_id)
        outcome = self._picker.pick()
        receipt_now = config.receipt_before_resp
        done = now if receipt_now else now + config.dlr_delay_ms / 1000
        message = _Message(message_id, conn.account, pdu, body, now, done, outcome)  # type: ignore[arg-type]
        store = self._store
        store[message_id] = message
        if len(store) >= config.message_store_size:
            self._store_old, self._store = store, {}
        key = hash((pdu.destination_addr, body, pdu.tlv(_USER_MESSAGE_REFERENCE)))
        seen = self._seen
        if key in seen or key in self._seen_old:
            counters.duplicates += 1
        else:
            seen.add(key)
            if len(seen) >= config.duplicate_window:
                self._seen_old, self._seen = seen, set()
        registered = pdu.registered_delivery & 0x03
        if registered == 1 or registered == 2:
            if receipt_now:
                self._receipts_due([message], now)
            else:
                self._receipts.push(done, message)
        return message

    def _find(self, message_id: str, account: _Account | None) -> _Message | None:
        message = self._store.get(message_id) or self._store_old.get(message_id)
        if message is None or message.account is not account:
            return None
        return message

    def _state(self, message: _Message, now: float) -> tuple[MessageState, int]:
        """The message_state and err of a message at `now`."""
        if message.cancelled:
            return MessageState.DELETED, 0
        if now < message.done:
            return MessageState.ENROUTE, 0
        outcome = self._outcomes[message.outcome]
        return outcome.state, outcome.err

    # --- receipts and deliveries -----------------------------------------------------

    def _send_responses(self, batch: list[tuple[_Connection, Pdu]], now: float) -> None:
        touched = set()
        for conn, response in batch:
            if conn.closed:
                continue
            conn.unanswered -= 1
            conn.session.send(response, now)
            touched.add(conn)
        for conn in touched:
            conn.flush()

    def _receipts_due(self, batch: list[_Message], now: float) -> None:
        accounts = set()
        for message in batch:
            failure_only = message.pdu.registered_delivery & 0x03 == 2
            if failure_only and message.outcome == 0 and not message.cancelled:
                continue
            self.counters.receipts_generated += 1
            self._enqueue(message.account, _Delivery(message.account, None, message))
            accounts.add(message.account)
        for account in accounts:
            self._pump(account, now)

    def _enqueue(self, account: _Account, delivery: _Delivery) -> None:
        outbox = account.outbox
        if len(outbox) >= self.config.max_pending_deliveries:
            outbox.popleft()
            self.counters.deliver_sm_dropped += 1
        outbox.append(delivery)

    def _retry(self, delivery: _Delivery, now: float, why: str) -> None:
        if delivery.attempts >= self.config.deliver_max_attempts:
            self.counters.deliver_sm_dropped += 1
            log.warning("deliver_sm_dropped", attempts=delivery.attempts, reason=why)
            return
        self._retries.push(now + self.config.deliver_retry_ms / 1000, delivery)

    def _retries_due(self, batch: list[_Delivery], now: float) -> None:
        accounts = set()
        for delivery in batch:
            account = delivery.account
            self._enqueue(account, delivery)
            accounts.add(account)
        for account in accounts:
            self._pump(account, now)

    def _pump(self, account: _Account, now: float) -> None:
        """Hand waiting deliveries to the account's receivers, round-robin, window allowing."""
        outbox = account.outbox
        receivers = account.receivers
        count = len(receivers)
        if not outbox or not count:
            return
        counters = self.counters
        touched = set()
        index = account.rr
        blocked = 0
        while outbox and blocked < count:
            conn = receivers[index % count]
            index += 1
            session = conn.session
            if conn.paused or conn.closed or session.window_free <= 0:
                blocked += 1
                continue
            blocked = 0
            delivery = outbox.popleft()
            pdu = delivery.pdu
            if pdu is None:
                pdu = delivery.pdu = self._receipt_pdu(delivery.message)  # type: ignore[arg-type]
            try:
                session.send(pdu, now, delivery)
            except LocalProtocolError as error:  # cannot happen with our own PDUs
                counters.deliver_sm_dropped += 1
                log.error("deliver_sm_unsendable", error=str(error))
                continue
            counters.deliver_sm_sent += 1
            if delivery.attempts:
                counters.deliver_sm_resent += 1
            elif delivery.message is None:
                counters.mo_sent += 1
            delivery.attempts += 1
            touched.add(conn)
        account.rr = index % count
        for conn in touched:
            conn.flush()

    def _receipt_pdu(self, message: _Message) -> Pdu:
        """The Annex B receipt deliver_sm of `message`, in its state at its done time."""
        mt = message.pdu
        outcome = _CANCELLED if message.cancelled else self._outcomes[message.outcome]
        message_id = text_id = message.message_id
        if self.config.receipt_text_id_decimal and self.config.id_format == "hex":
            text_id = str(int(message_id, 16))
        text = b"".join(
            (
                b"id:",
                text_id.encode("ascii"),
                outcome.dlvrd,  # " sub:001 dlvrd:00x submit date:"
                self._date(message.submitted),
                b" done date:",
                self._date(message.done),
                outcome.stat_err,  # " stat:XXXXXXX err:nnn Text:"
                _preview(message.body, mt.data_coding, mt.esm_class),
            )
        )
        return DeliverSm(
            source_addr_ton=mt.dest_addr_ton,
            source_addr_npi=mt.dest_addr_npi,
            source_addr=mt.destination_addr[:20],
            dest_addr_ton=mt.source_addr_ton,
            dest_addr_npi=mt.source_addr_npi,
            destination_addr=mt.source_addr[:20],
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=text,
            tlvs=((_RECEIPTED_MESSAGE_ID, message_id), *outcome.tlvs),
        )

    def _date(self, loop_time: float) -> bytes:
        """YYMMDDhhmm (UTC) of a loop time, cached per minute."""
        minute = int((self._wall_offset + loop_time) // 60)
        if minute != self._date_minute:
            self._date_minute = minute
            self._date_text = time.strftime("%y%m%d%H%M", time.gmtime(minute * 60)).encode()
        return self._date_text

    def _smpp_time(self, loop_time: float) -> str:
        """SMPP absolute time (YYMMDDhhmmsstnnp, UTC) of a loop time."""
        wall = self._wall_offset + loop_time
        tenths = int(wall * 10) % 10
        return time.strftime("%y%m%d%H%M%S", time.gmtime(wall)) + f"{tenths}00+"

    def _tick(self) -> None:
        """Once a second: re-queue deliver_sm unanswered past deliver_timeout_ms."""
        if self._loop is None or self._server is None:
            return
        now = self._loop_time()
        for account in self._accounts.values():
            late = []
            for conn in account.receivers:
                for expired in conn.session.expired(now):
                    if expired.request == CommandId.deliver_sm and expired.context is not None:
                        late.append(expired.context)
            if late:
                self.counters.deliver_sm_expired += len(late)
                account.outbox.extendleft(reversed(late))
                self._pump(account, now)
        self._housekeeping = self._loop.call_later(1.0, self._tick)


# --------------------------------------------------------------------------------------------
# Command line: `smsmta smsc-sim`
# --------------------------------------------------------------------------------------------


async def _serve(config: SimulatorConfig, announce: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Smsc(config) as sim:
        accounts = ", ".join(sorted(config.credentials))
        announce(f"smsc-sim: SMPP on {config.host}:{sim.port} (system_id {accounts})")
        if sim.control_port is not None:
            host = config.control_host or config.host
            announce(f"smsc-sim: control on http://{host}:{sim.control_port}/stats")
        await stop.wait()
        announce("smsc-sim: stopping")


def run(config: SimulatorConfig, announce: Callable[[str], None] = print) -> None:
    """Run the simulator until SIGINT/SIGTERM, on uvloop when it is installed.

    Meant for a process of its own: it also makes the cyclic garbage collector run far
    less often. The message store and the queues hold hundreds of thousands of long-lived
    objects, and the default thresholds rescan them so often that the simulator answers
    about half as many submit_sm with receipts per second (measured: 29k/s -> 53k/s).
    """
    gc.set_threshold(100_000, 50, 100)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(config, announce))
    else:
        uvloop.run(_serve(config, announce))


def _parse_accounts(values: tuple[str, ...]) -> dict[str, str]:
    accounts = {}
    for value in values:
        system_id, sep, password = value.partition(":")
        if not sep or not system_id:
            raise click.BadParameter(
                f"{value!r}: expected SYSTEM_ID:PASSWORD", param_hint="--account"
            )
        accounts[system_id] = password
    return accounts


def cli_command() -> click.Command:
    """The ``smsc-sim`` click command (register it on the ``smsmta`` group)."""

    @click.command("smsc-sim")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=2775, show_default=True, type=int, help="SMPP port (0: any).")
    @click.option("--system-id", default="smsmta", show_default=True, help="Account accepted.")
    @click.option(
        "--password",
        default="secret",
        envvar="SMSC_SIM_PASSWORD",
        show_default=True,
        help="Its password (or $SMSC_SIM_PASSWORD).",
    )
    @click.option(
        "--account",
        "extra_accounts",
        multiple=True,
        metavar="SYSTEM_ID:PASSWORD",
        help="Another account accepted (repeatable).",
    )
    @click.option(
        "--max-binds", default=0, show_default=True, help="Binds per system_id; 0: no cap."
    )
    @click.option(
        "--id-format", type=click.Choice(ID_FORMATS), default="decimal", show_default=True
    )
    @click.option("--dlr-delay-ms", default=0.0, show_default=True, help="Submit -> receipt delay.")
    @click.option("--fail-rate", default=0.0, show_default=True, help="Share of failed receipts.")
    @click.option(
        "--dlr-failure-stats",
        default="UNDELIV:1:6,REJECTD:2:2,EXPIRED:3:2",
        show_default=True,
        help="Failure mix, STAT[:ERR[:WEIGHT]],...",
    )
    @click.option("--resp-delay-ms", default=0.0, show_default=True, help="Submit -> resp delay.")
    @click.option("--max-window", default=0, show_default=True, help="Unanswered submits; 0: any.")
    @click.option(
        "--max-tps", default=0, show_default=True, help="Submits/s per system_id; 0: any."
    )
    @click.option("--drop-after", default=0, show_default=True, help="Abort at the Nth submit.")
    @click.option("--submit-fail-rate", default=0.0, show_default=True, help="Share refused.")
    @click.option("--receipt-before-resp", is_flag=True, help="Receipts before submit_sm_resp.")
    @click.option("--control-port", type=int, default=None, help="HTTP control port (0: any).")
    @click.option("--seed", type=int, default=None, help="Seed for reproducible outcomes.")
    @click.option("--mo-short-code", default="38000", show_default=True)
    @click.option(
        "--message-store-size",
        default=200_000,
        show_default=True,
        help="Messages kept for query_sm/cancel_sm/replace_sm (memory: ~1 KB each, up to 2x).",
    )
    @click.option(
        "--duplicate-window",
        default=1_000_000,
        show_default=True,
        help="Accepted submits remembered to count duplicates (up to 2x).",
    )
    @click.option(
        "--record-pdus",
        default=0,
        show_default=True,
        help="Binds and submits kept field by field for GET /recorded (the last N; 0: none).",
    )
    def smsc_sim(extra_accounts: tuple[str, ...], dlr_failure_stats: str, **options: Any) -> None:
        """Run the SMSC simulator (SMPP 3.4) until SIGINT/SIGTERM."""
        try:
            stats = parse_failure_stats(dlr_failure_stats)
            config = SimulatorConfig(
                accounts=_parse_accounts(extra_accounts), dlr_failure_stats=stats, **options
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        run(config, announce=lambda line: click.echo(line))

    return smsc_sim
