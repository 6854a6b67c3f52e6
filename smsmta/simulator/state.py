"""The simulator's records and timers: due queues, messages, deliveries, accounts, counters.

What it does: `DueQueue` holds items due at a time and drains them in batches from one
timer armed for its head (no asyncio handle per message). `Message` is an accepted
submit_sm / data_sm, `Delivery` a deliver_sm waiting for a receiver (a receipt or an MO
part), `Account` one system_id with its connections, receivers and outbox. `Counters` are
plain int attributes, and `snapshot` turns them, with the gauges, into ``GET /stats``.

Contract: internal to `smsmta.simulator`; `__slots__` and plain attributes because these
sit on the hot path of every submit and receipt.

Touches: the asyncio loop's timers (`DueQueue` only).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from smsmta.smpp.constants import CommandId, status_name
from smsmta.smpp.pdu import Pdu

if TYPE_CHECKING:
    from smsmta.simulator.connection import Connection


class DueQueue:
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


class Message:
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
        account: Account,
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


class Delivery:
    """A deliver_sm to hand to a receiver: a receipt (built when first sent) or an MO."""

    __slots__ = ("account", "attempts", "message", "pdu")

    def __init__(self, account: Account, pdu: Pdu | None, message: Message | None) -> None:
        self.account = account
        self.pdu = pdu  # None for a receipt not sent yet
        self.message = message  # None for an MO
        self.attempts = 0  # times sent


class Account:
    """One system_id: its connections, its receivers and the deliveries waiting for them."""

    __slots__ = ("connections", "outbox", "receivers", "rr", "system_id", "tps")

    def __init__(self, system_id: str) -> None:
        self.system_id = system_id
        self.connections: set[Connection] = set()
        self.receivers: list[Connection] = []
        self.outbox: deque[Delivery] = deque()
        self.rr = 0
        self.tps: deque[float] = deque()

    def detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn in self.receivers:
            self.receivers.remove(conn)


class Counters:
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


BIND_KINDS = {
    CommandId.bind_transmitter: "tx",
    CommandId.bind_receiver: "rx",
    CommandId.bind_transceiver: "trx",
}


def snapshot(
    counters: Counters,
    connections: Collection[Connection],
    accounts: Iterable[Account],
    queued: tuple[int, int, int],
) -> dict[str, Any]:
    """The body of ``GET /stats`` (`Smsc.stats`): the counters and gauges, JSON-ready.

    Counters since start: connections_total, binds_total / binds_refused, unbinds;
    submit_sm / data_sm received and their answers by status name (*_by_status);
    query_sm, cancel_sm, replace_sm, submit_multi received; accepted (message ids
    given); duplicates (see `smsmta.simulator.smsc`); throttled = throttled_window +
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
    deliver_sm_retry_scheduled. `queued` gives the lengths of the three due queues:
    responses delayed, receipts scheduled, deliver_sm retries scheduled.
    """
    c = counters
    active = {"tx": 0, "rx": 0, "trx": 0}
    in_flight = 0
    for conn in connections:
        if conn.kind is not None and not conn.closed:
            active[conn.kind] += 1
            in_flight += conn.session.outstanding if conn.kind != "tx" else 0
    pending = sum(len(account.outbox) for account in accounts)
    by_status = {status_name(k): v for k, v in sorted(c.submit_sm_by_status.items())}
    data_by_status = {status_name(k): v for k, v in sorted(c.data_sm_by_status.items())}
    responses_delayed, receipts_scheduled, retries_scheduled = queued
    return {
        "connections": len(connections),
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
        "responses_delayed": responses_delayed,
        "receipts_scheduled": receipts_scheduled,
        "receipts_generated": c.receipts_generated,
        "receipts_pending": pending,
        "deliver_sm_in_flight": in_flight,
        "deliver_sm_retry_scheduled": retries_scheduled,
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
