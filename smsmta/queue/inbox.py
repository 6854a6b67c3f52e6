"""The inbox: every deliver_sm / data_sm made durable before its response goes out.

Whoever holds a receiving bind (the SMS process's receivers in TX+RX mode, an MTA
child's transceivers in TRX mode) hands each request to `Inbox.add(account_id, pdu,
ack)`. The inbox encodes the PDU as SMPP does (smsmta.smpp.codec), queues it, and writes
everything queued in ONE transaction (COPY into `mid.inbox`), flushing back to back:
while one batch commits the next gathers, so the batch size follows the load and no
PDU waits for a timer. Only after the commit are the batch's `ack` callbacks called (they
send the deliver_sm_resp): a receipt or MO is never acknowledged before it is stored. A
crash before the commit loses nothing either: the SMSC sends unacknowledged PDUs again.

The same transaction NOTIFYs `smsmta_inbox`, so the SMS process (sms_process.process),
which handles every inbox row whichever process stored it, starts at once.

`keep_decoded` (the SMS process's own inbox only): the row ids are drawn from the inbox's
sequence in the flush's transaction, and after the commit the decoded PDUs stay in
`decoded` (row id -> PDU, at most `keep_decoded`) for reconciliation to take instead of
decoding the stored octets again. The row stays the durability record: what reconciles
is still what the database hands out, the PDU only saves a decode.

Contract:
- `add()` never blocks and never raises for the PDU's content; after `close()` began it
  refuses (returns False, no ack): the SMSC will send the PDU again later.
- `run()` flushes until `close()`; a lost database connection keeps the batch, reconnects
  and tries again (memory stays bounded: unacknowledged PDUs hold the SMSC's window).
- `ack` callbacks run in commit order, once each; one raising is logged, not propagated.
- `decoded` holds a PDU only once its row is committed, and never more than keep_decoded.

Touches: the database (`mid.inbox`, NOTIFY), nothing else; acks are the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
import structlog

from smsmta.db import InboxKind
from smsmta.smpp import codec
from smsmta.smpp.constants import CommandId, EsmClass
from smsmta.smpp.pdu import Pdu

if TYPE_CHECKING:
    from smsmta.smpp.aio import SmppConnection

log = structlog.get_logger("sms_process.inbox")

NOTIFY_CHANNEL = "smsmta_inbox"

# next_try_at takes the database's now(): the handler compares it with its own now(), so a
# host clock ahead of the database's cannot hide rows
COPY_INBOX = "COPY mid.inbox (account_id, kind, pdu, received_at) FROM STDIN (FORMAT BINARY)"
# binary COPY: the PDU octets go as they are (no hex escaping); an enum's binary input is
# its label's text, so `kind` travels as text
COPY_TYPES = ("int4", "text", "bytea", "timestamptz")
COPY_INBOX_IDS = (
    "COPY mid.inbox (id, account_id, kind, pdu, received_at) FROM STDIN (FORMAT BINARY)"
)
COPY_TYPES_IDS = ("int8", *COPY_TYPES)
NEXT_IDS = "SELECT nextval(pg_get_serial_sequence('mid.inbox', 'id')) FROM generate_series(1, %b)"

Ack = Callable[[], object]
Connect = Callable[[], Awaitable[psycopg.AsyncConnection]]

# esm_class message types that say "this deliver_sm is a receipt" (plain ints: enum
# arithmetic costs a microsecond a PDU)
_RECEIPT_TYPES = frozenset(
    {int(EsmClass.DELIVERY_RECEIPT), int(EsmClass.INTERMEDIATE_DELIVERY_NOTIFICATION)}
)
_MESSAGE_TYPE_MASK = int(EsmClass.MESSAGE_TYPE_MASK)
_RECEIPTED_MESSAGE_ID = 0x001E
_MESSAGE_STATE = 0x0427
_RECEIPT, _MO = InboxKind.RECEIPT.value, InboxKind.MO.value


def kind_of(pdu: Pdu) -> InboxKind:
    """Receipt or MO: the esm_class message type, else receipt TLVs on a plain deliver_sm."""
    return InboxKind(_kind_value(pdu))


def _kind_value(pdu: Pdu) -> str:
    if pdu.esm_class & _MESSAGE_TYPE_MASK in _RECEIPT_TYPES:
        return _RECEIPT
    tags = {tag for tag, _ in pdu.tlvs}
    if _RECEIPTED_MESSAGE_ID in tags and _MESSAGE_STATE in tags:
        return _RECEIPT
    return _MO


def acknowledge(conn: SmppConnection, pdu: Pdu) -> Ack:
    """The ack of one request: its response with ESME_ROK, on the connection it came on."""
    return lambda: conn.respond(pdu.make_resp())


STORED_COMMANDS = frozenset({CommandId.deliver_sm, CommandId.data_sm})


def handle_request(inbox: Inbox, account_id: int, conn: SmppConnection, pdu: Pdu) -> None:
    """What a receiving bind's `on_request` does: store deliver_sm / data_sm, answer later.

    Other requests (alert_notification has no response) are answered at once if they have
    a response, else ignored.
    """
    if pdu.command_id in STORED_COMMANDS:
        inbox.add(account_id, pdu, acknowledge(conn, pdu))
    elif pdu.RESPONSE is not None:
        conn.respond(pdu.make_resp())


@dataclass
class InboxStats:
    flushes: int = 0
    rows: int = 0
    refused: int = 0


class Inbox:
    """Batched, durable storage of received deliver_sm / data_sm; see the module docstring."""

    def __init__(
        self,
        connect: Connect,
        *,
        retry_delay: float = 1.0,
        max_batch: int = 5000,
        keep_decoded: int = 0,
    ) -> None:
        self.connect = connect
        self.retry_delay = retry_delay
        self.max_batch = max_batch
        self.keep_decoded = keep_decoded
        #: row id -> its PDU as received, for reconciliation to take (keep_decoded > 0)
        self.decoded: dict[int, Pdu] = {}
        self.stats = InboxStats()
        self.conn: psycopg.AsyncConnection | None = None
        self._rows: list[tuple[int, str, bytes, datetime]] = []
        self._pdus: list[Pdu] = []
        self._acks: list[Ack] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        #: called after each commit with (rows, seconds the flush took)
        self.on_flushed: Callable[[int, float], None] | None = None

    def add(self, account_id: int, pdu: Pdu, ack: Ack) -> bool:
        """Queue one received request; `ack()` runs once it is committed. False if closing."""
        if self._closing:
            self.stats.refused += 1
            return False
        self._rows.append((account_id, _kind_value(pdu), codec.encode(pdu), datetime.now(UTC)))
        self._acks.append(ack)
        if self.keep_decoded:
            self._pdus.append(pdu)
        self._idle.clear()
        self._wakeup.set()
        return True

    @property
    def backlog(self) -> int:
        """Requests received and not yet committed."""
        return len(self._rows)

    async def run(self) -> None:
        """Flush back to back while there is something to write; until close()."""
        failures = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._rows:
                try:
                    await self.flush()
                except psycopg.Error as error:
                    failures += 1
                    if failures == 1:  # once an outage, not once a retry
                        log.warning(
                            "sms_process.inbox_flush_failed",
                            error=str(error),
                            rows=len(self._rows),
                        )
                    await asyncio.sleep(self.retry_delay)
                    if self.conn is not None and (self.conn.closed or self.conn.broken):
                        self.conn = None
                else:
                    if failures:
                        log.info("sms_process.inbox_flush_recovered", attempts=failures)
                    failures = 0
            self._idle.set()
            if self._closing:
                return

    async def close(self) -> None:
        """Refuse new requests, write (and acknowledge) what is queued, then stop run()."""
        self._closing = True
        self._wakeup.set()
        await self._idle.wait()
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()

    async def flush(self) -> None:
        """Write what is queued (at most max_batch rows) in one transaction, then ack it."""
        if not self._rows:
            return
        if self.conn is None:
            self.conn = await self.connect()
        n = self.max_batch
        rows, acks = self._rows[:n], self._acks[:n]
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn = self.conn
        ids: list[int] = []
        async with conn.transaction():
            async with conn.cursor(binary=True) as cursor:
                if self.keep_decoded:
                    await cursor.execute(NEXT_IDS, (len(rows),))
                    ids = [row[0] for row in await cursor.fetchall()]
                    async with cursor.copy(COPY_INBOX_IDS) as copy:
                        copy.set_types(COPY_TYPES_IDS)
                        for row_id, row in zip(ids, rows, strict=True):
                            await copy.write_row((row_id, *row))
                else:
                    async with cursor.copy(COPY_INBOX) as copy:
                        copy.set_types(COPY_TYPES)
                        for row in rows:
                            await copy.write_row(row)
            await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        # only what was written: more may have come while the commit was in flight
        del self._rows[: len(rows)], self._acks[: len(acks)]
        if self.keep_decoded:
            pdus = self._pdus[: len(rows)]
            del self._pdus[: len(rows)]
            room = self.keep_decoded - len(self.decoded)
            if room > 0:
                self.decoded.update(zip(ids[:room], pdus[:room], strict=True))
        self.stats.flushes += 1
        self.stats.rows += len(rows)
        for ack in acks:
            try:
                ack()
            except Exception:  # one bad callback must not keep the others from running
                log.exception("sms_process.inbox_ack_failed")
        if self.on_flushed is not None:
            self.on_flushed(len(rows), loop.time() - started)
