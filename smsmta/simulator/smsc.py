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
      each sit in a FIFO (`DueQueue`) drained in batches by one timer armed for its head;
      a connection's output is written once per read and once per drain. A 1 s
      housekeeping timer re-queues deliver_sm past `deliver_timeout_ms`.
    - Time: loop.time() for every delay and for the tps window; receipt dates are UTC.
    - `record_pdus` N > 0 keeps the last N binds, submit_sm and data_sm as field dicts
      (`Smsc.recorded`, ``GET /recorded``): every body field and TLV as received (octet
      strings in hex, the bind's password masked), the status answered and the message id
      given; so end-to-end tests can assert what went on the wire.

Elsewhere: its speed in `smsmta.simulator`; settings and the outcome draw in `config`,
records and due queues in `state`, receipts, MO parts and ids in `pdus`, a connection in
`connection`, the HTTP control endpoint in `http`, ``smsmta smsc-sim`` in `cli`.

Touches: listening TCP sockets (SMPP and, when `control_port` is set, the HTTP control
endpoint), the asyncio loop's timers, structlog (events: bind_accepted, bind_refused,
connection_closed, malformed_pdu, links_dropped, garbage_injected, deliver_sm_dropped;
passwords are never logged). Not the database, not the filesystem.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import structlog

from smsmta.simulator.config import GARBAGE_KINDS, RUNTIME_FIELDS, OutcomePicker, SimulatorConfig
from smsmta.simulator.connection import Connection
from smsmta.simulator.pdus import (
    CANCELLED,
    DELIVERED,
    GARBAGE_SEQUENCE,
    USER_MESSAGE_REFERENCE,
    Outcome,
    WallClock,
    garbage,
    id_maker,
    mo_parts,
    receipt_pdu,
)
from smsmta.simulator.state import (
    BIND_KINDS,
    Account,
    Counters,
    Delivery,
    DueQueue,
    Message,
    snapshot,
)
from smsmta.smpp.constants import CommandId, MessageState
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import LocalProtocolError
from smsmta.smpp.pdu import Pdu

__all__ = ["Smsc"]

log = structlog.get_logger("smpp.simulator")

P = ParamSpec("P")
R = TypeVar("R")


def _awaitable(method: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`method` as a coroutine function: the same arguments, awaited for its result."""

    @functools.wraps(method)
    async def awaitable(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(*args, **kwargs)

    return awaitable


class Smsc:
    """The simulated SMSC. ``async with Smsc(config) as sim: ...`` or start() / stop().

    After `start`: `port` and `control_port` are the ports actually bound (config 0 means
    ephemeral); `stats` is a JSON-ready snapshot of the counters (the ``GET /stats`` body).
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.counters = Counters()
        #: Tests may watch every submit: called with (pdu, loop time, status answered).
        self.on_submit: Callable[[Pdu, float, int], None] | None = None
        #: The last `record_pdus` binds and submits, as `recorded_pdu` makes them.
        self.recorded: deque[dict[str, Any]] = deque(maxlen=self.config.record_pdus)
        seed = self.config.seed
        self._picker = OutcomePicker(self.config.fail_rate, self.config.dlr_failure_stats, seed)
        self._submit_random = random.Random(None if seed is None else f"{seed}/submit").random
        id_random = random.Random(None if seed is None else f"{seed}/id")
        self._garbage_random = random.Random(None if seed is None else f"{seed}/garbage")
        self._garbage_sequence = GARBAGE_SEQUENCE
        self._outcomes = (
            DELIVERED,
            *(Outcome.of(s.stat, s.err) for s in self.config.dlr_failure_stats),
        )
        self._make_id = id_maker(self.config.id_format, id_random)
        self._next_id = 0
        self._accounts: dict[str, Account] = {}
        self._connections: set[Connection] = set()
        self._store: dict[str, Message] = {}
        self._store_old: dict[str, Message] = {}
        self._seen: set[int] = set()
        self._seen_old: set[int] = set()
        self._mo_reference = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._port: int | None = None
        self._control_port: int | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._clock = WallClock(0.0)
        self._loop_time: Callable[[], float] = time.monotonic  # the loop's clock once started

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> Smsc:
        """Listen on `config.host:port` (and the control port when set)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        loop = self._loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self._clock = WallClock(time.time() - loop.time())
        self._responses = DueQueue(loop, self._send_responses)
        self._receipts = DueQueue(loop, self._receipts_due)
        self._retries = DueQueue(loop, self._retries_due)
        config = self.config
        self._server = await loop.create_server(
            lambda: Connection(self), config.host, config.port, reuse_address=True
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
        """A JSON-ready snapshot of the counters: the body of ``GET /stats`` (its fields are
        listed at `smsmta.simulator.state.snapshot`)."""
        queued = (0, 0, 0)
        if self._server is not None:
            queued = (len(self._responses), len(self._receipts), len(self._retries))
        return snapshot(self.counters, self._connections, self._accounts.values(), queued)

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
        bad = set(binds) - set(BIND_KINDS.values())
        if bad or not binds:
            raise ValueError(f"binds must be some of tx, rx, trx; got {sorted(binds)!r}")
        written = 0
        for conn in list(self._connections):
            if conn.closed or conn.kind not in binds or conn.transport is None:
                continue
            conn.flush()  # what the session holds goes first: the garbage lands between PDUs
            self._garbage_sequence += 1
            sequence = self._garbage_sequence
            conn.transport.write(garbage(kind, sequence, self._garbage_random.randbytes))
            written += 1
        self.counters.garbage_injected += written
        log.info("garbage_injected", kind=kind, connections=written)
        return written

    def queue_mo(
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
        The control endpoint calls it; tests ``await`` `inject_mo`, the same call.
        """
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        config = self.config
        system_id = config.system_id if system_id is None else system_id
        if system_id not in config.credentials:
            raise ValueError(f"unknown system_id {system_id!r}")
        destination = config.mo_short_code if destination is None else destination
        parts = mo_parts(source, destination, text, data_coding, self._mo_reference)
        self._mo_reference = (self._mo_reference + 1) % 256
        account = self._account(system_id)
        for pdu in parts:
            self._enqueue(account, Delivery(account, pdu, None))
        self.counters.mo_injected += 1
        self._pump(account, self._loop_time())
        return len(parts)

    inject_mo = _awaitable(queue_mo)

    # --- binds and connections -------------------------------------------------------

    def _account(self, system_id: str) -> Account:
        account = self._accounts.get(system_id)
        if account is None:
            account = self._accounts[system_id] = Account(system_id)
        return account

    def _check_bind(self, pdu: Pdu) -> tuple[int, str]:
        account = self._accounts.get(pdu.system_id)
        binds = len(account.connections) if account is not None else 0
        return self.config.bind_status(pdu.system_id, pdu.password, binds)

    def _bound(self, conn: Connection, system_id: str, kind: str) -> None:
        account = self._account(system_id)
        conn.account, conn.kind = account, kind
        account.connections.add(conn)
        self.counters.binds_total += 1
        if kind != "tx":
            account.receivers.append(conn)
            if account.outbox:
                self._pump(account, self._loop_time())

    def _connection_made(self, conn: Connection) -> None:
        self._connections.add(conn)
        self.counters.connections_total += 1

    def _detach(self, conn: Connection) -> None:
        if conn.account is not None:
            conn.account.detach(conn)

    def _connection_lost(self, conn: Connection, exc: Exception | None) -> None:
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

    # --- submits ---------------------------------------------------------------------

    def _admit(self, conn: Connection, pdu: Pdu, now: float) -> int:
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

    def _accept_message(self, conn: Connection, pdu: Pdu, body: bytes, now: float) -> Message:
        config = self.config
        counters = self.counters
        counters.accepted += 1
        self._next_id += 1
        message_id = self._make_id(self._next_id)
        outcome = self._picker.pick()
        receipt_now = config.receipt_before_resp
        done = now if receipt_now else now + config.dlr_delay_ms / 1000
        message = Message(message_id, conn.account, pdu, body, now, done, outcome)  # type: ignore[arg-type]
        store = self._store
        store[message_id] = message
        if len(store) >= config.message_store_size:
            self._store_old, self._store = store, {}
        key = hash((pdu.destination_addr, body, pdu.tlv(USER_MESSAGE_REFERENCE)))
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

    def _find(self, message_id: str, account: Account | None) -> Message | None:
        message = self._store.get(message_id) or self._store_old.get(message_id)
        if message is None or message.account is not account:
            return None
        return message

    def _state(self, message: Message, now: float) -> tuple[MessageState, int]:
        """The message_state and err of a message at `now`."""
        if message.cancelled:
            return MessageState.DELETED, 0
        if now < message.done:
            return MessageState.ENROUTE, 0
        outcome = self._outcomes[message.outcome]
        return outcome.state, outcome.err

    # --- receipts and deliveries -----------------------------------------------------

    def _send_responses(self, batch: list[tuple[Connection, Pdu]], now: float) -> None:
        touched = set()
        for conn, response in batch:
            if conn.closed:
                continue
            conn.unanswered -= 1
            conn.session.send(response, now)
            touched.add(conn)
        for conn in touched:
            conn.flush()

    def _receipts_due(self, batch: list[Message], now: float) -> None:
        accounts = set()
        for message in batch:
            failure_only = message.pdu.registered_delivery & 0x03 == 2
            if failure_only and message.outcome == 0 and not message.cancelled:
                continue
            self.counters.receipts_generated += 1
            self._enqueue(message.account, Delivery(message.account, None, message))
            accounts.add(message.account)
        for account in accounts:
            self._pump(account, now)

    def _enqueue(self, account: Account, delivery: Delivery) -> None:
        outbox = account.outbox
        if len(outbox) >= self.config.max_pending_deliveries:
            outbox.popleft()
            self.counters.deliver_sm_dropped += 1
        outbox.append(delivery)

    def _retry(self, delivery: Delivery, now: float, why: str) -> None:
        if delivery.attempts >= self.config.deliver_max_attempts:
            self.counters.deliver_sm_dropped += 1
            log.warning("deliver_sm_dropped", attempts=delivery.attempts, reason=why)
            return
        self._retries.push(now + self.config.deliver_retry_ms / 1000, delivery)

    def _retries_due(self, batch: list[Delivery], now: float) -> None:
        accounts = set()
        for delivery in batch:
            account = delivery.account
            self._enqueue(account, delivery)
            accounts.add(account)
        for account in accounts:
            self._pump(account, now)

    def _pump(self, account: Account, now: float) -> None:
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

    def _receipt_pdu(self, message: Message) -> Pdu:
        """The Annex B receipt deliver_sm of `message`, in its state at its done time."""
        outcome = CANCELLED if message.cancelled else self._outcomes[message.outcome]
        text_id = message.message_id
        if self.config.receipt_text_id_decimal and self.config.id_format == "hex":
            text_id = str(int(text_id, 16))
        return receipt_pdu(message, outcome, text_id, self._clock)

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
