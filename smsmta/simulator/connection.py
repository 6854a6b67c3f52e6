"""One ESME connection to the simulator: a Session(Role.SMSC) between the socket and `Smsc`.

What it does: `Connection` is the asyncio protocol of one TCP connection. It feeds the
bytes read to its `smsmta.smpp.session.Session`, dispatches each event to a handler
(`HANDLERS`: binds, submit_sm / data_sm, query_sm, cancel_sm, replace_sm, submit_multi,
unbind, responses to our deliver_sm), writes what the session holds once per read, and
applies back-pressure (`pause_writing`: no more deliver_sm for it, and no more submits
read from it unless it is a receiver).

Contract: the decisions (bind check, admission, message ids, receipts, deliveries) are
the `Smsc`'s; a connection holds only its own state (bind kind, submits received,
responses still to send). The hot path is `data_received` -> `_on_submit` ->
`Smsc._accept_message`.

Touches: its transport; structlog (bind_accepted, bind_refused, malformed_pdu; passwords
are never logged).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from smsmta.simulator.pdus import MESSAGE_PAYLOAD, recorded_pdu
from smsmta.simulator.state import BIND_KINDS, Account
from smsmta.smpp.constants import CommandId, MessageState, Tag, status_name
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    Pdu,
    QuerySm,
    ReplaceSm,
    SubmitMulti,
    SubmitSm,
    Unbind,
)
from smsmta.smpp.session import NEED_DATA, Rejected, Response, Role, Session, Stray, Timeouts

if TYPE_CHECKING:
    from smsmta.simulator.smsc import Smsc

log = structlog.get_logger("smpp.simulator")


class Connection(asyncio.Protocol):
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
        self.account: Account | None = None
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
        handlers = HANDLERS
        while not self.closed:
            try:
                event = session.next_event()
            except RemoteProtocolError as error:
                self._malformed(error)
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

    def _malformed(self, error: RemoteProtocolError) -> None:
        self.smsc.counters.malformed += 1
        log.warning(
            "malformed_pdu",
            peer=self.peer,
            system_id=self.account.system_id if self.account is not None else None,
            error=str(error),
            status=status_name(error.command_status),
            command_id=None if error.command_id is None else f"0x{error.command_id:08X}",
            sequence_number=error.sequence_number,
            framing_lost=error.framing_lost,
        )

    # --- output and closing ----------------------------------------------------------

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self, reason: str) -> None:
        """Close after writing what is buffered."""
        self._end(reason, abort=False)

    def abort(self, reason: str) -> None:
        """Close at once, dropping what is buffered (no unbind)."""
        self._end(reason, abort=True)

    def _end(self, reason: str, *, abort: bool) -> None:
        if not self.closed:
            self.closed = True
            self.smsc._detach(self)
            self.close_reason = reason
            if abort:
                self.transport.abort()  # type: ignore[union-attr]
            else:
                self.transport.close()  # type: ignore[union-attr]

    # --- requests from the ESME ------------------------------------------------------

    def _on_bind(self, pdu: Pdu, now: float) -> None:
        smsc = self.smsc
        kind = BIND_KINDS[pdu.command_id]
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
        body = pdu.short_message or pdu.tlv(MESSAGE_PAYLOAD, b"")
        self._on_submit(pdu, body, now, counters.submit_sm_by_status)

    def _on_data_sm(self, pdu: Pdu, now: float) -> None:
        counters = self.smsc.counters
        counters.data_sm += 1
        self._on_submit(pdu, pdu.tlv(MESSAGE_PAYLOAD, b""), now, counters.data_sm_by_status)

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
                final_date=smsc._clock.smpp_time(message.done) if final else "",
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


HANDLERS: dict[type, Callable[[Connection, Any, float], None]] = {
    SubmitSm: Connection._on_submit_sm,
    DataSm: Connection._on_data_sm,
    BindTransmitter: Connection._on_bind,
    BindReceiver: Connection._on_bind,
    BindTransceiver: Connection._on_bind,
    QuerySm: Connection._on_query_sm,
    CancelSm: Connection._on_cancel_sm,
    ReplaceSm: Connection._on_replace_sm,
    SubmitMulti: Connection._on_submit_multi,
    Unbind: Connection._on_unbind,
    Response: Connection._on_response,
    Rejected: Connection._on_rejected,
    Stray: Connection._on_stray,
}
