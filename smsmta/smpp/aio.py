"""The asyncio adapter: one SMPP bind kept alive over TCP or TLS, driven by `Session`.

`SmppClient(settings, handler).run()` connects, binds within the bind timeout, serves
the bind until it ends, then waits the reconnect delay and starts again, until
`stop()`. The protocol itself lives in `smsmta.smpp.session`; this module only moves bytes,
keeps time and calls the handler:

- `handler.on_bound(conn)` / `on_unbound(conn, reason)`: the bind came up / went away;
- `on_response(conn, response)`: the answer to a request sent with `conn.submit(...)`,
  with the context given then;
- `on_expired(conn, expired, reason)`: a request that will get no answer here, either
  past its MT timeout (`"timeout"`) or lost with its connection (`"connection lost"`):
  its fate is unknown, the SMSC may have accepted it;
- `on_request(conn, pdu)`: deliver_sm / data_sm / alert_notification from the SMSC; the
  handler answers with `conn.respond(pdu.make_resp(...))` when it is ready (after the
  receipt is stored, for instance), or never if the connection is gone by then;
- `on_stray(conn, pdu)`: a response that matched nothing outstanding (late answers).

Writes are coalesced: PDUs queued during one event-loop iteration leave in one
`transport.write`. `conn.window_free` says how many more requests fit the window;
`await client.wait_ready()` waits for a bound, writable connection with room.
Back-pressure comes from the transport's `pause_writing`. TCP_NODELAY is set; TLS
verification is on unless the settings skip it, which logs a warning at every connect.
With `verbose_trace` every PDU is logged, the bind password masked, and unless
`trace_personal_data` the addresses keep only their last 2 characters and the texts
(short_message, message_payload) their length (`traced`). Touches: sockets,
the event loop's clock and timers, structlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from smsmta.smpp.constants import CommandId
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsmta.smpp.pdu import BindReceiver, BindTransceiver, BindTransmitter, Pdu
from smsmta.smpp.session import (
    BIND_STATES,
    BOUND,
    CONNECTION_CLOSED,
    DEFAULT_TIMEOUTS,
    NEED_DATA,
    Expired,
    LinkDead,
    Rejected,
    Response,
    Role,
    Session,
    Stray,
    Timeouts,
)

log = structlog.get_logger("smpp")

PASSWORD_MASK = "********"


class BindKind(enum.Enum):
    TRANSMITTER = BindTransmitter
    RECEIVER = BindReceiver
    TRANSCEIVER = BindTransceiver


@dataclass(frozen=True)
class BindSettings:
    """Everything one bind needs; built by the services from an account's settings."""

    host: str
    port: int
    system_id: str
    password: str = field(default="", repr=False)
    kind: BindKind = BindKind.TRANSMITTER
    system_type: str = ""
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    window: int = 10
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    reconnect_delay: float = 10.0
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None
    verbose_trace: bool = False
    trace_personal_data: bool = False  # the trace shows numbers and texts whole
    name: str = ""  # the account, for logs

    def bind_pdu(self) -> Pdu:
        return self.kind.value(
            system_id=self.system_id,
            password=self.password,
            system_type=self.system_type,
            addr_ton=self.addr_ton,
            addr_npi=self.addr_npi,
            address_range=self.address_range,
        )


class Handler(Protocol):
    def on_bound(self, conn: SmppConnection) -> None: ...
    def on_unbound(self, conn: SmppConnection, reason: str) -> None: ...
    def on_response(self, conn: SmppConnection, response: Response) -> None: ...
    def on_expired(self, conn: SmppConnection, expired: Expired, reason: str) -> None: ...
    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None: ...
    def on_stray(self, conn: SmppConnection, pdu: Pdu) -> None: ...


class BaseHandler:
    """A handler that does nothing; subclass and override what you need."""

    def on_bound(self, conn: SmppConnection) -> None:
        pass

    def on_unbound(self, conn: SmppConnection, reason: str) -> None:
        pass

    def on_response(self, conn: SmppConnection, response: Response) -> None:
        pass

    def on_expired(self, conn: SmppConnection, expired: Expired, reason: str) -> None:
        pass

    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None:
        if pdu.RESPONSE is not None:
            conn.respond(pdu.make_resp())

    def on_stray(self, conn: SmppConnection, pdu: Pdu) -> None:
        pass


class BindError(Exception):
    """The SMSC answered the bind with an error status."""

    def __init__(self, status: int) -> None:
        from smsmta.smpp.constants import status_name

        self.status = status
        super().__init__(f"bind refused: {status_name(status)} (0x{status:08X})")


def masked(pdu: Pdu) -> Pdu:
    """The PDU as it may be logged: a bind's password replaced by a mask."""
    if pdu.command_id in BIND_STATES and pdu.password:
        return pdu.replace(password=PASSWORD_MASK)
    return pdu


_TAG_MESSAGE_PAYLOAD = 0x0424


def traced(pdu: Pdu, personal: bool = False) -> Pdu:
    """The PDU as the verbose trace logs it: `masked`, and unless `personal` its addresses
    cut to their last 2 characters and its texts to their length (personal data)."""
    pdu = masked(pdu)
    if personal:
        return pdu
    names = pdu.FIELD_NAMES
    changes: dict[str, Any] = {}
    for name in ("source_addr", "destination_addr"):
        value = getattr(pdu, name) if name in names else ""
        if value:
            changes[name] = "*" * max(0, len(value) - 2) + value[-2:]
    if "short_message" in names and pdu.short_message:
        changes["short_message"] = f"<{len(pdu.short_message)} octets>".encode()
    if any(tag == _TAG_MESSAGE_PAYLOAD for tag, _ in pdu.tlvs):
        changes["tlvs"] = tuple(
            (tag, f"<{len(value)} octets>" if tag == _TAG_MESSAGE_PAYLOAD else value)
            for tag, value in pdu.tlvs
        )
    return pdu.replace(**changes) if changes else pdu


class SmppConnection(asyncio.Protocol):
    """One TCP (or TLS) connection and its SMPP session."""

    def __init__(self, settings: BindSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.session = Session(Role.ESME, window=settings.window, timeouts=settings.timeouts)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.bound: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[str] = self.loop.create_future()
        self.unbound: asyncio.Future[None] = self.loop.create_future()
        self._flush_pending = False
        self._writable = True
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._close_reason = "closed"
        self._trace = settings.verbose_trace
        self._log = log.bind(
            account=settings.name, system_id=settings.system_id, bind=settings.kind.name.lower()
        )
        shortest = min(t for t in settings.timeouts if t > 0)
        self._tick_interval = min(1.0, max(0.02, shortest / 20))

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tick_handle = self.loop.call_later(self._tick_interval, self._tick)
        self._send(self.settings.bind_pdu())

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data, self.loop.time())
        self._process()

    def eof_received(self) -> bool:
        self.session.receive_data(b"", self.loop.time())
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        reason = self._close_reason if exc is None else f"connection lost: {exc}"
        was_bound = self.bound.done() and not self.bound.exception()
        for expired in self.session.abandon():
            if expired.request not in _CONTROL_REQUESTS:
                self.handler.on_expired(self, expired, "connection lost")
        if not self.bound.done():
            self.bound.set_exception(ConnectionError(reason))
            self.bound.exception()  # retrieved: run() reports it
        if was_bound:
            self.handler.on_unbound(self, reason)
        if not self.unbound.done():
            self.unbound.set_result(None)
        if not self.closed.done():
            self.closed.set_result(reason)
        self._ready.set()  # wake waiters: they will find the connection gone
        self._drained.set()

    def pause_writing(self) -> None:
        self._writable = False
        self._ready.clear()

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    # --- events ----------------------------------------------------------------------

    def _process(self) -> None:
        session, handler = self.session, self.handler
        while True:
            try:
                event = session.next_event()
            except RemoteProtocolError as error:
                self._log.warning(
                    "smpp.malformed_pdu",
                    error=str(error),
                    status=f"0x{error.command_status:08X}",
                    framing_lost=error.framing_lost,
                )
                if error.framing_lost:
                    self.abort("framing lost")
                    return
                continue
            if event is NEED_DATA:
                break
            if event is CONNECTION_CLOSED:
                self.abort("closed by the SMSC")
                return
            if self._trace:
                self._log.info("smpp.pdu.in", pdu=repr(self._traced_event(event)))
            if isinstance(event, Response):
                request = event.request
                if request in _CONTROL_REQUESTS:
                    self._on_control_response(event)
                else:
                    handler.on_response(self, event)
                    self._wake()
            elif isinstance(event, Stray):
                handler.on_stray(self, event.pdu)
            elif isinstance(event, Rejected):
                self._log.warning(
                    "smpp.rejected_request",
                    pdu=event.pdu.COMMAND_ID.name,
                    status=f"0x{event.status:08X}",
                )
            elif event.command_id == CommandId.unbind:
                self._log.info("smpp.unbound_by_smsc")
                self._close_reason = "unbound by the SMSC"
                self.loop.call_soon(self.abort, "unbound by the SMSC")
            else:
                handler.on_request(self, event)
        self._flush()

    def _on_control_response(self, event: Response) -> None:
        request, status = event.request, event.pdu.command_status
        if request in BIND_STATES:
            if self.bound.done():
                return
            if status == 0 and self.session.state in BOUND:
                self.bound.set_result(None)
                self._log.info("smpp.bound", host=self.settings.host, port=self.settings.port)
                self.handler.on_bound(self)
                self._wake()
            else:
                self.bound.set_exception(BindError(status))
        elif request == CommandId.unbind and not self.unbound.done():
            self.unbound.set_result(None)

    def _tick(self) -> None:
        now = self.loop.time()
        for event in self.session.tick(now):
            if isinstance(event, LinkDead):
                self._log.warning("smpp.link_dead", idle_for=event.idle_for)
                self.abort(f"no answer to enquire_link for {event.idle_for:g} s")
                return
            if event.request in BIND_STATES:
                if not self.bound.done():
                    self.bound.set_exception(TimeoutError("bind timeout"))
            elif event.request == CommandId.unbind:
                if not self.unbound.done():
                    self.unbound.set_result(None)
            elif event.request != CommandId.enquire_link:
                self.handler.on_expired(self, event, "timeout")
                self._wake()
        self._flush()
        self._tick_handle = self.loop.call_later(self._tick_interval, self._tick)

    # --- sending ---------------------------------------------------------------------

    @property
    def is_bound(self) -> bool:
        return (
            self.session.state in BOUND
            and self.transport is not None
            and (not self.transport.is_closing())
        )

    @property
    def window_free(self) -> int:
        return self.session.window_free if self.is_bound and self._writable else 0

    def _traced_event(self, event: Any) -> Any:
        """An event as the verbose trace logs it: its PDU `traced`, and unless personal data
        is shown, the caller's context (a message, a reply) as its type only."""
        personal = self.settings.trace_personal_data
        if isinstance(event, Pdu):
            return traced(event, personal)
        if isinstance(getattr(event, "pdu", None), Pdu):
            event = event._replace(pdu=traced(event.pdu, personal))
        if not personal and getattr(event, "context", None) is not None:
            event = event._replace(context=f"<{type(event.context).__name__}>")
        return event

    def submit(self, pdu: Pdu, context: Any = None) -> int:
        """Send a request (submit_sm, data_sm, ...); its answer reaches on_response."""
        sequence = self.session.send(pdu, self.loop.time(), context)
        self._drained.clear()
        if self._trace:
            shown = traced(pdu.with_sequence_number(sequence), self.settings.trace_personal_data)
            self._log.info("smpp.pdu.out", pdu=repr(shown))
        self._schedule_flush()
        return sequence

    def respond(self, pdu: Pdu) -> bool:
        """Answer a request of the SMSC; False when the connection is gone."""
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            self.session.send(pdu, self.loop.time())
        except LocalProtocolError:
            return False
        if self._trace:
            self._log.info("smpp.pdu.out", pdu=repr(traced(pdu, self.settings.trace_personal_data)))
        self._schedule_flush()
        return True

    def _send(self, pdu: Pdu) -> None:
        self.session.send(pdu, self.loop.time())
        if self._trace:
            self._log.info("smpp.pdu.out", pdu=repr(traced(pdu, self.settings.trace_personal_data)))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.session.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _wake(self) -> None:
        if self.window_free > 0:
            self._ready.set()
        else:
            self._ready.clear()
        if self.session.in_flight == 0:
            self._drained.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (answered or expired); False on timeout."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_ready(self) -> None:
        """Wait until a request fits the window and the transport accepts data."""
        while self.window_free <= 0:
            if self.closed.done():
                raise ConnectionError(self.closed.result())
            self._ready.clear()
            await self._ready.wait()

    async def unbind(self) -> None:
        """Send unbind and wait for its answer, bounded by the unbind timeout."""
        if self.session.state not in BOUND:
            return
        self._send_unbind()
        try:
            await asyncio.wait_for(asyncio.shield(self.unbound), self.settings.timeouts.unbind)
        except TimeoutError:
            self._log.warning("smpp.unbind_timeout")

    def _send_unbind(self) -> None:
        self.session.unbind(self.loop.time())
        self._flush()

    def abort(self, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.abort()

    def close(self, reason: str = "closed") -> None:
        """Close after writing what is queued."""
        self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()


_CONTROL_REQUESTS = frozenset({*BIND_STATES, CommandId.enquire_link, CommandId.unbind})


def ssl_context(settings: BindSettings) -> ssl.SSLContext | None:
    """The TLS context of a bind, or None for plain TCP."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca_file)
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_verification_error(settings: BindSettings, error: ssl.SSLCertVerificationError) -> str:
    """What to tell the operator when the SMSC's certificate does not verify."""
    reason = error.verify_message or error.reason or str(error)
    return (
        f"account {settings.name or settings.system_id!r}: TLS certificate of"
        f" {settings.host}:{settings.port} not verified ({reason}); give its CA in"
        " connection.tls_ca_file, or set smsc.skip_tls_verification (tests only)"
    )


async def connect(settings: BindSettings, handler: Handler) -> SmppConnection:
    """Open one connection and bind, all within the bind timeout; raise on failure."""
    loop = asyncio.get_running_loop()
    context = ssl_context(settings)
    if context is not None and not settings.tls_verify:
        log.warning(
            "smpp.tls_verification_skipped",
            account=settings.name,
            host=settings.host,
            port=settings.port,
            note="the SMSC's certificate is not checked: for tests only",
        )
    conn: SmppConnection | None = None
    try:
        async with asyncio.timeout(settings.timeouts.bind):
            _, conn = await loop.create_connection(
                lambda: SmppConnection(settings, handler),
                settings.host,
                settings.port,
                ssl=context,
                server_hostname=settings.host if context is not None else None,
            )
            await conn.bound
    except BaseException:
        if conn is not None:
            conn.abort("bind failed")
        raise
    return conn


class SmppClient:
    """Keeps one bind up: connect, bind, serve, and reconnect after the configured delay."""

    def __init__(self, settings: BindSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.connection: SmppConnection | None = None
        self.reconnects = 0
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._log = log.bind(
            account=settings.name, system_id=settings.system_id, bind=settings.kind.name.lower()
        )

    @property
    def is_bound(self) -> bool:
        return self.connection is not None and self.connection.is_bound

    async def run(self) -> None:
        """Serve the bind until stop(); every failure is logged and retried after the delay."""
        while not self._stopping.is_set():
            try:
                conn = await connect(self.settings, self.handler)
            except ssl.SSLCertVerificationError as error:
                # no retry fixes this on our side: an error, naming the account and why
                self._log.error(
                    "smpp.bind_failed",
                    host=self.settings.host,
                    port=self.settings.port,
                    error=tls_verification_error(self.settings, error),
                    retry_in=self.settings.reconnect_delay,
                )
            except (OSError, TimeoutError, BindError, ConnectionError) as error:
                # a handler with on_bind_failed reports failures itself (one line an outage)
                report = getattr(self.handler, "on_bind_failed", None)
                if report is not None:
                    report(self, error)
                (self._log.debug if report is not None else self._log.warning)(
                    "smpp.bind_failed",
                    host=self.settings.host,
                    port=self.settings.port,
                    error=str(error) or type(error).__name__,
                    retry_in=self.settings.reconnect_delay,
                )
            else:
                self.connection = conn
                self._changed.set()
                reason = await conn.closed
                self.connection = None
                self._changed.set()
                if self._stopping.is_set():
                    break
                self._log.warning(
                    "smpp.disconnected", reason=reason, retry_in=self.settings.reconnect_delay
                )
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.reconnect_delay)

    async def wait_ready(self) -> SmppConnection:
        """A bound connection with room in its window (waits across reconnects)."""
        while True:
            conn = self.connection
            if conn is not None and conn.is_bound:
                try:
                    await conn.wait_ready()
                    if conn.is_bound:
                        return conn
                except ConnectionError:
                    pass
            if self._stopping.is_set():
                raise ConnectionError("client stopped")
            self._changed.clear()
            if self.connection is None or not self.connection.is_bound:
                await self._changed.wait()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop reconnecting; wait for in-flight answers (bounded); unbind; close."""
        self._stopping.set()
        self._changed.set()
        conn = self.connection
        if conn is None:
            return
        timeout = self.settings.timeouts.response if drain_timeout is None else drain_timeout
        await conn.drain(timeout)
        await conn.unbind()
        conn.close("stopped")
        await conn.closed
