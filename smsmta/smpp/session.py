"""The SMPP 3.4 session: bind, window and unbind as a state machine, without I/O.

Bytes in with `receive_data(data, now)`, events out with `next_event()`; PDUs in with
`send(pdu, now)`, bytes out with `data_to_send()`; time only ever enters as an argument
(`tick(now)`), so tests drive hours of protocol without sleeping. The same class plays
both parts: `Role.ESME` (our MTA and SMS process) and `Role.SMSC` (the simulator).

The rules it lives by:

1. Which PDU may be sent, and which may be received, depends only on the role and the
   state; both are one table each (`_SEND`, `_RECEIVE`). Sending a PDU the table does
   not allow raises LocalProtocolError and changes nothing.
2. Every request we send gets a sequence number (1..0x7FFFFFFF, wrapping, never one
   still outstanding) and a deadline; `expired(now)` hands back those past it, with the
   caller's context, exactly once. A response is matched by sequence number, in any order.
3. Requests other than enquire_link and unbind count against the window; sending one
   more than the window raises LocalProtocolError.
4. The session answers by itself what needs no decision: enquire_link, unbind (then the
   session is closed), a request not allowed in this state (its `_resp` with
   ESME_RINVBNDSTS, or generic_nack ESME_RINVCMDID for a command this role never
   receives, such as a bind or a submit_sm sent to an ESME, whatever its body; reported
   as a `Rejected` event), a second bind to an SMSC (ESME_RALYBND), and a malformed PDU
   (the answer SMPP says, then RemoteProtocolError is raised; the state is unchanged and
   the next call goes on unless `framing_lost`).
5. When idle for `enquire_link_period`, `tick(now)` sends enquire_link; when that gets
   no answer within twice the period, `tick` reports `LinkDead`.

Requests the caller must answer (submit_sm on the SMSC side, deliver_sm on the ESME
side, binds on the SMSC side...) come out of `next_event()` as the PDU itself; the
caller answers with `send(pdu.make_resp(...), now)`. Touches nothing: no sockets, no
clock, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from smsmta.smpp.codec import DEFAULT_MAX_COMMAND_LENGTH, Framer, decode, encode
from smsmta.smpp.constants import RESPONSE_BIT, CommandId
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsmta.smpp.pdu import (
    PDU_CLASSES,
    EnquireLink,
    EnquireLinkResp,
    Pdu,
    Unbind,
    error_response,
    generic_nack,
)

C = CommandId
MAX_SEQUENCE = 0x7FFFFFFF


class Role(enum.Enum):
    ESME = "esme"
    SMSC = "smsc"


class State(enum.Enum):
    OPEN = "open"  # connected, not bound
    BINDING = "binding"  # a bind is outstanding (ESME) or awaits our answer (SMSC)
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"  # we sent unbind; responses still drain
    CLOSED = "closed"  # unbound, or the peer closed the connection


BOUND = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})
BIND_STATES = {
    C.bind_transmitter: State.BOUND_TX,
    C.bind_receiver: State.BOUND_RX,
    C.bind_transceiver: State.BOUND_TRX,
}
BIND_RESPONSES = {command | RESPONSE_BIT: bound for command, bound in BIND_STATES.items()}

# What an ESME sends to an SMSC (and an SMSC receives), by bind type; and the reverse.
_ESME_TX = frozenset(
    {C.submit_sm, C.submit_multi, C.data_sm, C.query_sm, C.cancel_sm, C.replace_sm}
)
_SMSC_RX = frozenset({C.deliver_sm, C.data_sm, C.alert_notification})
_CONTROL = frozenset({C.enquire_link, C.generic_nack})
_RESPONSES = frozenset(command for command in CommandId if command & RESPONSE_BIT)


def _states(**by_state: Iterable[CommandId]) -> dict[State, frozenset[CommandId]]:
    table: dict[State, frozenset[CommandId]] = {state: frozenset() for state in State}
    table.update({State[name]: frozenset(commands) for name, commands in by_state.items()})
    return table


# Requests each role may send, by state. Responses may be sent in every state but CLOSED.
_SEND = {
    Role.ESME: _states(
        OPEN=(*BIND_STATES, *_CONTROL),
        BINDING=_CONTROL,
        BOUND_TX=(*_ESME_TX, *_CONTROL, C.unbind),
        BOUND_RX=(*_CONTROL, C.unbind),
        BOUND_TRX=(*_ESME_TX, *_CONTROL, C.unbind),
        UNBINDING=(C.generic_nack,),
    ),
    Role.SMSC: _states(
        OPEN=(*_CONTROL, C.outbind),
        BINDING=_CONTROL,
        BOUND_TX=(*_CONTROL, C.unbind),
        BOUND_RX=(*_SMSC_RX, *_CONTROL, C.unbind),
        BOUND_TRX=(*_SMSC_RX, *_CONTROL, C.unbind),
        UNBINDING=(C.generic_nack,),
    ),
}

# Requests each role accepts from its peer, by state (enquire_link and unbind are
# answered by the session itself and never reach the caller).
_RECEIVE = {
    Role.ESME: _states(
        OPEN=(C.outbind,),
        BOUND_RX=_SMSC_RX,
        BOUND_TRX=_SMSC_RX,
    ),
    Role.SMSC: _states(
        OPEN=BIND_STATES,
        BOUND_TX=_ESME_TX,
        BOUND_TRX=_ESME_TX,
    ),
}
# Requests a role never receives, whatever the state: answered with generic_nack.
_FOREIGN = {
    Role.ESME: frozenset({*BIND_STATES, *_ESME_TX} - {C.data_sm}),
    Role.SMSC: frozenset({C.deliver_sm, C.alert_notification, C.outbind}),
}
_NOT_WINDOWED = frozenset({C.enquire_link, C.unbind, C.generic_nack})


def _never_received(error: RemoteProtocolError, role: Role) -> RemoteProtocolError:
    """A malformed request of a command `role` never receives: generic_nack ESME_RINVCMDID."""
    name = CommandId(error.command_id).name  # type: ignore[arg-type]
    return RemoteProtocolError(
        f"{name} is never sent to an {role.name} (and its body is invalid: {error})",
        command_status=S.ESME_RINVCMDID,
        sequence_number=error.sequence_number,
        command_id=error.command_id,
        field=error.field,
    )


class Timeouts(NamedTuple):
    """Seconds. `response`: any request but bind/enquire_link/unbind (the MT timeout)."""

    response: float = 30.0
    bind: float = 30.0
    enquire_link_period: float = 30.0  # 0 disables enquire_link
    unbind: float = 5.0


DEFAULT_TIMEOUTS = Timeouts()


# --- events ----------------------------------------------------------------------------


class Response(NamedTuple):
    """The answer to one of our requests (its `_resp`, or a generic_nack)."""

    pdu: Pdu
    request: CommandId
    context: Any


class Expired(NamedTuple):
    """One of our requests got no answer before its deadline (or the link went away)."""

    sequence_number: int
    request: CommandId
    context: Any


class Stray(NamedTuple):
    """A response that matches no outstanding request (late, after its expiry, or bogus)."""

    pdu: Pdu


class Rejected(NamedTuple):
    """A request the peer should not have sent here; the session answered `status`."""

    pdu: Pdu
    status: int


class LinkDead(NamedTuple):
    """enquire_link went unanswered for twice its period: reconnect."""

    idle_for: float


class _Sentinel(enum.Enum):
    NEED_DATA = "need data"
    CONNECTION_CLOSED = "connection closed"


NEED_DATA: Final = _Sentinel.NEED_DATA
CONNECTION_CLOSED: Final = _Sentinel.CONNECTION_CLOSED
Event = Pdu | Response | Stray | Rejected | _Sentinel


class _Outstanding(NamedTuple):
    command_id: CommandId
    deadline: float
    context: Any


class Session:
    """One SMPP connection's protocol state; see the module docstring for its rules."""

    def __init__(
        self,
        role: Role,
        *,
        window: int = 1,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.role = role
        self.window = window
        self.timeouts = timeouts
        self._send_table = _SEND[role]
        self._receive_table = _RECEIVE[role]
        self._foreign = _FOREIGN[role]
        self.state = State.OPEN
        self.bind_command: CommandId | None = None  # the bind in force or in progress
        self._framer = Framer(max_command_length)
        self._out: list[bytes] = []
        self._outstanding: dict[int, _Outstanding] = {}
        self._in_window = 0
        self._next_sequence = 1
        self._last_activity: float | None = None
        self._eof = False

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        # the tables of the state in force, looked up once per change rather than per PDU
        # (Role and State hash in Python; command ids are ints)
        self._state = state
        self._can_send = self._send_table[state]
        self._can_receive = self._receive_table[state]

    # --- reading ---------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer; `b""` means the peer closed the connection."""
        self._last_activity = now
        if data:
            self._framer.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event:
        """The next PDU or event from the peer, NEED_DATA, or CONNECTION_CLOSED.

        Raises RemoteProtocolError for a malformed PDU after queueing its answer; call
        again to go on, unless the error says `framing_lost` (then reset the connection).
        """
        while True:
            try:
                frame = self._framer.next_frame()
            except RemoteProtocolError as error:
                self._answer_error(error)
                raise
            if frame is None:
                if self._eof:
                    self.state = State.CLOSED
                    return CONNECTION_CLOSED
                return NEED_DATA
            try:
                pdu = decode(frame)
            except RemoteProtocolError as error:
                if error.command_id in self._foreign:  # its body does not matter
                    error = _never_received(error, self.role)
                self._answer_error(error)
                raise error from None
            command_id = pdu[0]
            if command_id & RESPONSE_BIT:
                return self._on_response(pdu, command_id)
            event = self._on_request(pdu, command_id)
            if event is not None:
                return event

    def _answer_error(self, error: RemoteProtocolError) -> None:
        if error.command_id in self._foreign and not error.framing_lost:
            # answered like the valid ones: generic_nack, or nothing if it has no response
            has_response = PDU_CLASSES[error.command_id].RESPONSE is not None
            answer: Pdu | None = (
                generic_nack(error.sequence_number or 0, S.ESME_RINVCMDID) if has_response else None
            )
        else:
            answer = error_response(error)
        if answer is not None and self.state is not State.CLOSED:
            self._out.append(encode(answer))

    def _on_response(self, pdu: Pdu, command_id: int) -> Response | Stray:
        entry = self._outstanding.pop(pdu[2], None)
        if entry is None:
            return Stray(pdu)
        request = entry.command_id
        if command_id != request | RESPONSE_BIT and command_id != C.generic_nack:
            self._outstanding[pdu[2]] = entry  # not the answer to that request
            return Stray(pdu)
        if request not in _NOT_WINDOWED:
            self._in_window -= 1
        if request in BIND_STATES and self.state is State.BINDING:
            if pdu[1] == S.ESME_ROK and command_id != C.generic_nack:
                self.state = BIND_STATES[request]
            else:
                self.state, self.bind_command = State.OPEN, None
        elif request == C.unbind:
            self.state = State.CLOSED
        return Response(pdu, request, entry.context)

    def _on_request(self, pdu: Pdu, command_id: int) -> Pdu | Rejected | None:
        state = self.state
        if command_id == C.enquire_link:
            if state is not State.CLOSED:
                self._out.append(encode(EnquireLinkResp(sequence_number=pdu[2])))
            return None
        if command_id == C.unbind:
            if state in BOUND or state is State.UNBINDING:
                self._out.append(encode(pdu.make_resp()))
                self.state = State.CLOSED
                return pdu
            return self._reject(pdu, S.ESME_RINVBNDSTS)
        if command_id in self._foreign:
            return self._reject(pdu, S.ESME_RINVCMDID, nack=True)
        if command_id in BIND_STATES and state in BOUND:
            return self._reject(pdu, S.ESME_RALYBND)
        if command_id in self._can_receive:
            if command_id in BIND_STATES:  # SMSC side: the caller checks credentials
                self.state, self.bind_command = State.BINDING, pdu.COMMAND_ID
            return pdu
        return self._reject(pdu, S.ESME_RINVBNDSTS)

    def _reject(self, pdu: Pdu, status: int, *, nack: bool = False) -> Rejected:
        if self.state is not State.CLOSED and pdu.RESPONSE is not None:
            answer = generic_nack(pdu[2], status) if nack else pdu.make_resp(command_status=status)
            self._out.append(encode(answer))
        return Rejected(pdu, status)

    # --- writing ---------------------------------------------------------------------

    def send(self, pdu: Pdu, now: float, context: Any = None) -> int:
        """Queue a PDU for the peer; return its sequence number.

        A request is numbered here (whatever sequence_number it carried) and remembered
        with `context` until its answer or its deadline. A response keeps the sequence
        number of the request it answers.
        """
        command_id = pdu[0]
        state = self.state
        if command_id & RESPONSE_BIT:
            if state is State.CLOSED:
                raise LocalProtocolError(f"cannot send {pdu.COMMAND_ID.name}: session closed")
            if command_id in BIND_RESPONSES:
                self._bind_answered(command_id, pdu[1])
            self._out.append(encode(pdu))
            self._last_activity = now
            return pdu[2]
        if command_id not in self._can_send:
            raise LocalProtocolError(
                f"cannot send {pdu.COMMAND_ID.name} as {self.role.value} in state {state.value}"
            )
        windowed = command_id not in _NOT_WINDOWED
        if windowed and self._in_window >= self.window:
            raise LocalProtocolError(f"window full: {self._in_window} of {self.window} in flight")
        sequence = self._take_sequence()
        data = encode(pdu.with_sequence_number(sequence))  # may raise: nothing changed yet
        self._out.append(data)
        self._last_activity = now
        if command_id == C.generic_nack:
            return sequence
        timeouts = self.timeouts
        if command_id in BIND_STATES:
            timeout = timeouts.bind
            self.state, self.bind_command = State.BINDING, pdu.COMMAND_ID
        elif command_id == C.enquire_link:
            timeout = 2 * timeouts.enquire_link_period or timeouts.response
        elif command_id == C.unbind:
            timeout = timeouts.unbind
            self.state = State.UNBINDING
        else:
            timeout = timeouts.response
        self._outstanding[sequence] = _Outstanding(pdu.COMMAND_ID, now + timeout, context)
        if windowed:
            self._in_window += 1
        return sequence

    def _bind_answered(self, command_id: int, status: int) -> None:
        expected = self.bind_command
        if (
            self.role is not Role.SMSC
            or self.state is not State.BINDING
            or expected is None
            or command_id != expected | RESPONSE_BIT
        ):
            raise LocalProtocolError(
                f"cannot send {CommandId(command_id).name}: no such bind awaits an answer"
            )
        if status == S.ESME_ROK:
            self.state = BIND_STATES[expected]
        else:
            self.state, self.bind_command = State.OPEN, None

    def _take_sequence(self) -> int:
        sequence = self._next_sequence
        while sequence in self._outstanding:
            sequence = sequence % MAX_SEQUENCE + 1
        self._next_sequence = sequence % MAX_SEQUENCE + 1
        return sequence

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (b"" when nothing is)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # --- time ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests counted against the window and not yet answered."""
        return self._in_window

    @property
    def window_free(self) -> int:
        return self.window - self._in_window

    @property
    def outstanding(self) -> int:
        """Every request not yet answered, control ones included."""
        return len(self._outstanding)

    def expired(self, now: float) -> list[Expired]:
        """Forget and return the requests whose deadline has passed."""
        late = [seq for seq, entry in self._outstanding.items() if entry.deadline <= now]
        return [self._forget(seq) for seq in late]

    def abandon(self) -> list[Expired]:
        """The connection is gone: forget and return every outstanding request."""
        self.state = State.CLOSED
        return [self._forget(seq) for seq in list(self._outstanding)]

    def _forget(self, sequence: int) -> Expired:
        entry = self._outstanding.pop(sequence)
        if entry.command_id not in _NOT_WINDOWED:
            self._in_window -= 1
        if entry.command_id in BIND_STATES and self.state is State.BINDING:
            self.state, self.bind_command = State.OPEN, None
        return Expired(sequence, entry.command_id, entry.context)

    def tick(self, now: float) -> list[Expired | LinkDead]:
        """Expire late requests; keep an idle link alive; report a dead one.

        Call it periodically (a fraction of the shortest timeout is plenty).
        """
        events: list[Expired | LinkDead] = []
        for event in self.expired(now):
            if event.request == C.enquire_link:
                events.append(LinkDead(2 * self.timeouts.enquire_link_period))
            else:
                events.append(event)
        period = self.timeouts.enquire_link_period
        if (
            period > 0
            and self.state in BOUND
            and self._last_activity is not None
            and now - self._last_activity >= period
            and not any(e.command_id == C.enquire_link for e in self._outstanding.values())
        ):
            self.send(EnquireLink(), now)
        return events

    def unbind(self, now: float) -> int:
        """Start the unbind handshake (wait for the Response, or its expiry)."""
        return self.send(Unbind(), now)
