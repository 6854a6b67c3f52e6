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

The SMS process's MO handler (sms_process.mo) then changes rows in its batch's own
transaction, on its connection, one statement each: `hold(conn, ids)` keeps the parts of
a long MO still missing parts (`held`, fed back to the reassembler after a restart) and
`delete(conn, ids)` removes the rows handled (or undecodable).

`keep_decoded` (the SMS process's own inbox only): the row ids are drawn from the inbox's
sequence in the flush's transaction, and after the commit the decoded PDUs stay in
`decoded` (row id -> PDU, at most `keep_decoded`) for reconciliation to take instead of
decoding the stored octets again. The row stays the durability record: what reconciles
is still what the database hands out, the PDU only saves a decode.

Contract:
- `add()` never blocks and never raises for the PDU's content; after `close()` began it
  refuses (returns False, no ack): the SMSC will send the PDU again later.
- `run()` flushes until `close()`, at most `max_batch` rows a transaction; a lost database
  connection keeps the batch, reconnects and tries again, logged once an outage
  (`sms_process.inbox_flush_failed` / `inbox_flush_recovered`; memory stays bounded:
  unacknowledged PDUs hold the SMSC's window). A batch the database refuses for another
  reason is retried a few times, then `run()` raises (its owner stops the process): the
  loop and its rules are smsmta.batch's `BatchWriter`.
- `ack` callbacks run in commit order, once each; one raising is logged
  (`sms_process.inbox_ack_failed`), not propagated.
- `decoded` holds a PDU only once its row is committed, and never more than keep_decoded.

Touches: the database (`mid.inbox`, NOTIFY), nothing else; acks are the caller's;
`hold` and `delete` run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
import structlog

from smsmta.backoff import Backoff
from smsmta.batch import Batch, BatchStats, BatchWriter
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
HOLD = "UPDATE mid.inbox SET held = true WHERE id = ANY(%s)"
DELETE = "DELETE FROM mid.inbox WHERE id = ANY(%s)"

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


Row = tuple[int, str, bytes, datetime]  # account_id, kind, encoded PDU, received_at


@dataclass
class _Rows(Batch):
    """Received requests not yet committed: the rows, their acks, their PDUs (keep_decoded)."""

    rows: list[Row] = field(default_factory=list)
    callbacks: list[Ack] = field(default_factory=list)  # one ack per row
    pdus: list[Pdu] = field(default_factory=list)  # only with keep_decoded
    ids: list[int] = field(default_factory=list)  # the rows' ids, set by the write

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, limit: int | None) -> _Rows:
        if limit is None or len(self.rows) <= limit:
            head = _Rows(self.rows, self.callbacks, self.pdus)
            self.rows, self.callbacks, self.pdus = [], [], []
            return head
        head = _Rows(self.rows[:limit], self.callbacks[:limit], self.pdus[:limit])
        del self.rows[:limit], self.callbacks[:limit], self.pdus[:limit]
        return head

    def put_back(self, head: _Rows) -> None:
        self.rows[:0] = head.rows
        self.callbacks[:0] = head.callbacks
        self.pdus[:0] = head.pdus


@dataclass
class InboxStats(BatchStats):
    refused: int = 0


class Inbox(BatchWriter[_Rows]):
    """Batched, durable storage of received deliver_sm / data_sm; see the module docstring."""

    stats: InboxStats

    def __init__(
        self,
        connect: Connect,
        *,
        retry_delay: float = 1.0,
        max_batch: int = 5000,
        keep_decoded: int = 0,
        password: str | None = None,
    ) -> None:
        super().__init__(
            _Rows(),
            connect,
            event_prefix="sms_process",
            name="inbox_flush",
            max_batch=max_batch,
            backoff=Backoff(retry_delay, retry_delay),
            password=password,
            callback_event="inbox_ack_failed",
            logger=log,
        )
        self.retry_delay = retry_delay
        self.keep_decoded = keep_decoded
        #: row id -> its PDU as received, for reconciliation to take (keep_decoded > 0)
        self.decoded: dict[int, Pdu] = {}
        self.stats = InboxStats()

    def add(self, account_id: int, pdu: Pdu, ack: Ack) -> bool:
        """Queue one received request; `ack()` runs once it is committed. False if closing."""
        if self._closing:
            self.stats.refused += 1
            return False
        pending = self._pending
        pending.rows.append((account_id, _kind_value(pdu), codec.encode(pdu), datetime.now(UTC)))
        pending.callbacks.append(ack)
        if self.keep_decoded:
            pending.pdus.append(pdu)
        self._idle.clear()
        self._wakeup.set()
        return True

    async def _write(self, conn: psycopg.AsyncConnection, batch: _Rows) -> None:
        """COPY the rows (with ids drawn first when keep_decoded), then NOTIFY."""
        rows = batch.rows
        async with conn.cursor(binary=True) as cursor:
            if self.keep_decoded:
                await cursor.execute(NEXT_IDS, (len(rows),))
                batch.ids = [row[0] for row in await cursor.fetchall()]
                async with cursor.copy(COPY_INBOX_IDS) as copy:
                    copy.set_types(COPY_TYPES_IDS)
                    for row_id, row in zip(batch.ids, rows, strict=True):
                        await copy.write_row((row_id, *row))
            else:
                async with cursor.copy(COPY_INBOX) as copy:
                    copy.set_types(COPY_TYPES)
                    for row in rows:
                        await copy.write_row(row)
        await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))

    def _committed(self, batch: _Rows) -> None:
        if self.keep_decoded:
            room = self.keep_decoded - len(self.decoded)
            if room > 0:
                self.decoded.update(zip(batch.ids[:room], batch.pdus[:room], strict=True))


# --- the MO handler's changes, in its own transaction ---------------------------------


async def hold(conn: psycopg.AsyncConnection, ids: list[int]) -> None:
    """Keep these MO parts in the inbox, `held`, until their long MO is complete."""
    await conn.execute(HOLD, (ids,))


async def delete(conn: psycopg.AsyncConnection, ids: list[int]) -> None:
    """Remove these handled rows from the inbox."""
    await conn.execute(DELETE, (ids,))
