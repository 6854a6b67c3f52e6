"""`smsmta mid`: serve the mid API with uvicorn on uvloop, HTTPS when configured.

TLS is uvicorn's own (`ssl_certfile`, `ssl_keyfile`, `ssl_keyfile_password`,
`ssl_ca_certs`, `ssl_cert_reqs`), fed from the `mid:` section of the settings (see
smsmta.settings.MidService and config/mid.example.yaml). SIGTERM: uvicorn stops accepting
connections, lets requests in flight finish (at most `shutdown_timeout` seconds; a push
chunk is one transaction, so an interrupted one is simply not committed) and exits 0;
idle HTTPS keep-alive connections are aborted rather than closed, so that a client
that never answers TLS's close_notify does not hold the stop for the whole timeout.
HTTP limits (issue 14, README "HTTP limits"): a request's headers must arrive within
`header_timeout` and its body within `body_timeout` after them, else the connection is
closed (uvicorn has no such timeout: GuardedH11Protocol adds it); an idle keep-alive
connection closes after `keep_alive_timeout`; request line and headers are at most
`max_header_bytes`. Past `max_connections` open connections, a new one evicts the one
that has waited longest for a request's headers (a slowloris client, else the oldest idle
keep-alive one), so half-sent requests cannot lock legitimate clients out; when none can
be evicted (all sending bodies or being answered) the next request gets 503 at once
rather than a stall.
Touches: one listening socket for the API, one for /metrics, the database.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from midsourcing.api import create_app
from smsmta import obs
from smsmta.settings import MidConfig
from smsmta.systemd import Notifier

log = structlog.get_logger("midsourcing.server")

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the client's part of each request.

    From the connection's start (or the end of the previous response) the request's
    headers must be complete within `header_timeout`; then its body within
    `body_timeout`. A client past its deadline is cut: a half-sent request (slowloris)
    holds a file descriptor for seconds, not forever. The time the application takes is
    not counted: only what waits on the client.
    """

    header_timeout = 10.0
    body_timeout = 60.0
    max_connections = 1000

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._guarded_phase: object = None
        self._guard: asyncio.TimerHandle | None = None
        self._phase_started = time.monotonic()

    @property
    def limit_concurrency(self) -> int | None:
        """uvicorn's 503 threshold, not counting the connections already being closed
        (evicted or cut ones whose connection_lost has not run yet)."""
        if self._limit is None:
            return None
        closing = sum(
            1
            for other in self.connections
            if getattr(other, "transport", None) is not None and other.transport.is_closing()
        )
        return self._limit + closing

    @limit_concurrency.setter
    def limit_concurrency(self, value: int | None) -> None:
        self._limit = value

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._rearm()
        if len(self.connections) > self.max_connections:
            self._evict_one()

    def _waiting_for_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

    def _evict_one(self) -> None:
        """Over max_connections: close the connection that has waited longest for a
        request's headers (a slow client, or the oldest idle keep-alive one). None such
        (all are sending bodies or being answered): the new one's request gets 503."""
        oldest: GuardedH11Protocol | None = None
        for other in self.connections:
            if (
                other is not self
                and isinstance(other, GuardedH11Protocol)
                and other.transport is not None
                and not other.transport.is_closing()
                and other._waiting_for_headers()
                and (oldest is None or other._phase_started < oldest._phase_started)
            ):
                oldest = other
        if oldest is not None:
            log.info(
                "connection evicted", waited=round(time.monotonic() - oldest._phase_started, 1)
            )
            oldest._disarm()
            oldest.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._rearm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._rearm()

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _rearm(self) -> None:
        """(Re)start the deadline when the client's side enters another phase."""
        if self.transport is None or self.transport.is_closing():
            self._disarm()
            return
        phase = self.conn.their_state
        if phase is self._guarded_phase:
            return
        self._disarm()
        self._guarded_phase = phase
        self._phase_started = time.monotonic()
        if phase is h11.IDLE:
            self._guard = self.loop.call_later(self.header_timeout, self._expired, phase)
        elif phase is h11.SEND_BODY:
            self._guard = self.loop.call_later(self.body_timeout, self._expired, phase)

    def _expired(self, phase: object) -> None:
        self._guard = None
        if self.conn.their_state is not phase or self.transport.is_closing():
            return
        if phase is h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
            return  # an answer is still being written (a pipelined request waits for it)
        log.info(
            "slow client cut",
            waiting_for="headers" if phase is h11.IDLE else "body",
            seconds=self.header_timeout if phase is h11.IDLE else self.body_timeout,
        )
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.abort()


def guarded_protocol(
    header_timeout: float, body_timeout: float, max_connections: int
) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with these limits (uvicorn instantiates the class)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
        },
    )


def uvicorn_config(config: MidConfig, dsn: str) -> uvicorn.Config:
    service = config.mid
    password = service.tls_keyfile_password
    return uvicorn.Config(
        create_app(config, dsn),
        http=guarded_protocol(
            service.header_timeout, service.body_timeout, service.max_connections
        ),
        timeout_keep_alive=service.keep_alive_timeout,  # type: ignore[arg-type]
        # uvicorn answers 503 from this many connections or requests in progress; the
        # protocol evicts header-waiting connections first, so this is reached only when
        # every connection is sending a body or being answered
        limit_concurrency=service.max_connections + 1,
        h11_max_incomplete_event_size=service.max_header_bytes,
        host=service.listen,
        port=service.port,
        loop="uvloop",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
        ssl_certfile=str(service.tls_certfile) if service.tls_certfile else None,
        ssl_keyfile=str(service.tls_keyfile) if service.tls_keyfile else None,
        ssl_keyfile_password=password.get_secret_value() if password else None,
        ssl_ca_certs=str(service.tls_ca_certs) if service.tls_ca_certs else None,
        ssl_cert_reqs=CERT_REQS[service.tls_client_cert],
    )


class NotifyingServer(uvicorn.Server):
    """uvicorn that tells systemd it is ready once it listens, and feeds the watchdog."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self.notifier = notifier
        self.keepalive_every = notifier.watchdog_interval()
        self.last_keepalive = 0.0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.notifier.ready(f"mid API on port {self.config.port}")

    async def on_tick(self, counter: int) -> bool:
        now = time.monotonic()
        if self.keepalive_every is not None and now - self.last_keepalive >= self.keepalive_every:
            self.notifier.keepalive()
            self.last_keepalive = now
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.notifier.stopping()
        abort_idle_tls(self)
        await super().shutdown(sockets)


def abort_idle_tls(server: uvicorn.Server) -> int:
    """Abort the idle keep-alive HTTPS connections; how many.

    uvicorn closes an idle connection on shutdown, and closing TLS waits for the client's
    close_notify: a client that keeps an idle pooled connection (the marketing service's
    httpx) never sends one, so the stop waited the whole graceful timeout (30 s). An idle
    connection holds no request, so aborting it loses nothing; requests in flight still
    finish as before.
    """
    aborted = 0
    for connection in list(server.server_state.connections):
        cycle = getattr(connection, "cycle", None)
        transport = getattr(connection, "transport", None)
        idle = cycle is None or getattr(cycle, "response_complete", False)
        if idle and transport is not None and transport.get_extra_info("ssl_object") is not None:
            transport.abort()
            aborted += 1
    return aborted


def run(config: MidConfig, dsn: str) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    service = config.mid
    metrics_port = obs.serve_metrics(service.metrics_host, service.metrics_port)
    server = NotifyingServer(uvicorn_config(config, dsn), Notifier())
    scheme = "https" if service.tls_certfile else "http"
    log.info(
        "mid API starting",
        url=f"{scheme}://{service.listen}:{service.port}",
        metrics_port=metrics_port,
    )
    # uvicorn re-raises the stop signal after its graceful shutdown, with the handlers it
    # found installed: make those no-ops so that a SIGTERM ends with exit code 0
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: None)
    server.run()
    if not server.started:
        log.error("mid API did not start", port=service.port)
        return 1
    log.info("mid API stopped")
    return 0
