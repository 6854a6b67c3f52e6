"""`smsmta mid`: serve the mid API with uvicorn on uvloop, HTTPS when configured.

TLS is uvicorn's own (`ssl_certfile`, `ssl_keyfile`, `ssl_keyfile_password`,
`ssl_ca_certs`, `ssl_cert_reqs`), fed from the `mid:` section of the settings (see
smsmta.settings.MidService and config/mid.example.yaml). SIGTERM: uvicorn stops accepting
connections, lets requests in flight finish (at most `shutdown_timeout` seconds; a push
chunk is one transaction, so an interrupted one is simply not committed) and exits 0;
idle HTTPS keep-alive connections are aborted rather than closed, so that a client
that never answers TLS's close_notify does not hold the stop for the whole timeout.
Touches: one listening socket for the API, one for /metrics, the database.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time

import structlog
import uvicorn

from midsourcing.api import create_app
from smsmta import obs
from smsmta.settings import MidConfig
from smsmta.systemd import Notifier

log = structlog.get_logger("midsourcing.server")

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def uvicorn_config(config: MidConfig, dsn: str) -> uvicorn.Config:
    service = config.mid
    password = service.tls_keyfile_password
    return uvicorn.Config(
        create_app(config, dsn),
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
